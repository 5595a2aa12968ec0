"""The README's two fresh-machine commands stay true: CI runs the test command verbatim, the main job's config exists."""

import re

from bitesm.cli import build_parser

from conftest import REPO


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(pip install [^\n]+)\n```", (REPO / "README.md").read_text())


def test_readme_opens_with_main_job_and_test_commands():
    commands = _readme_commands()
    assert len(commands) >= 2
    main_job, tests = commands[:2]
    assert main_job.endswith("bitesm train --config configs/quickstart.yaml --output-dir runs/quickstart")
    assert tests.endswith("python -m pytest -q") and '".[dev]"' in tests
    for command in (main_job, tests):
        assert command.startswith("pip install torch==2.13.0 && pip install -c constraints.txt -e ")
    assert (REPO / "configs" / "quickstart.yaml").is_file()


def test_ci_runs_the_readme_test_command():
    assert _readme_commands()[1] in (REPO / ".ci" / "run").read_text().splitlines()


def test_constraints_pin_torch_and_the_tested_stack():
    pins = dict(
        line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line
    )
    assert pins["torch"] == "2.13.0"
    for name in ("transformers", "accelerate", "datasets", "scipy", "tensorboard", "biotite", "peft", "bitsandbytes"):
        assert name in pins


def test_cli_has_help_for_every_command(capsys):
    parser = build_parser()
    for argv in (
        ["--help"], ["train", "--help"], ["lora", "--help"], ["lora", "merge", "--help"], ["eval", "proteingym", "--help"],
        ["convert", "long", "--help"],
    ):
        try:
            parser.parse_args(argv)
        except SystemExit as exit_:
            assert exit_.code == 0
        assert "usage: bitesm" in capsys.readouterr().out
