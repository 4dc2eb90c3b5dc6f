import leukomorph


def test_public_api_sorted_and_importable():
    assert leukomorph.__all__ == sorted(leukomorph.__all__)
    for name in leukomorph.__all__:
        assert getattr(leukomorph, name) is not None


def test_stages_do_not_import_training():
    import subprocess
    import sys

    code = "import sys, leukomorph.pipeline, leukomorph.report, leukomorph.cli.main; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
