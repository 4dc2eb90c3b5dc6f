"""Command-line interface (Typer). Progress bars live here only."""
