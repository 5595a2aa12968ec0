"""``import bitesm`` is light, and with it imported transformers' Auto classes load bitesm folders without
``trust_remote_code`` and without a prompt, whatever the order of imports; ``bitesm --help`` imports no library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ESM_DIR

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from transformers import EsmConfig

    from bitesm.data.tokenizer import load_tokenizer
    from bitesm.models import BitEsmForMaskedLM, bitesm_config_from_esm

    path = tmp_path_factory.mktemp("auto") / "model"
    cfg = EsmConfig.from_pretrained(str(ESM_DIR), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64)
    BitEsmForMaskedLM(bitesm_config_from_esm(cfg, quantization="ternary")).save_pretrained(path)
    load_tokenizer(str(ESM_DIR)).save_pretrained(path)
    return path


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with stdin closed (a ``[y/N]`` prompt would fail, not wait)."""
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)


def test_import_bitesm_imports_neither_torch_nor_transformers(tmp_path):
    proc = _python("import sys, bitesm\nprint(sorted(m for m in ('torch', 'transformers') if m in sys.modules))",
                   tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_help_imports_no_library_and_warns_nothing(tmp_path):
    code = ("import sys, contextlib, io\nfrom bitesm.cli import main\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    try:\n        main(['--help'])\n    except SystemExit as e:\n        assert e.code == 0\n"
            "for group in ('eval', 'ptq', 'train', 'embed', 'push'):\n"
            "    with contextlib.redirect_stdout(out):\n"
            "        try:\n            main([group, '--help'])\n        except SystemExit as e:\n"
            "            assert e.code == 0\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'bitsandbytes', 'peft', 'accelerate') "
            "if m in sys.modules)\nprint(heavy)\n")
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
    assert proc.stderr == "", proc.stderr


@pytest.mark.parametrize(
    "imports",
    [
        "import bitesm\nfrom transformers import AutoModelForMaskedLM, AutoTokenizer",  # the README's order
        "from transformers import AutoModelForMaskedLM, AutoTokenizer\nimport bitesm",  # transformers first
        "import bitesm\nfrom transformers import EsmForMaskedLM\nfrom transformers import AutoModelForMaskedLM, "
        "AutoTokenizer",  # modeling code before the Auto classes
        "import bitesm.nn\nimport transformers\nfrom transformers import AutoModelForMaskedLM, AutoTokenizer",
    ],
    ids=["bitesm-first", "transformers-first", "esm-modeling-first", "submodule-first"],
)
def test_auto_classes_load_a_bitesm_folder_without_trust_remote_code(model_dir, imports):
    code = (f"{imports}\n"
            f"model = AutoModelForMaskedLM.from_pretrained({str(model_dir)!r})\n"
            f"tokenizer = AutoTokenizer.from_pretrained({str(model_dir)!r})\n"
            "print(type(model).__module__, type(model).__name__, type(tokenizer).__name__)\n")
    proc = _python(code, model_dir.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["bitesm.models.modeling_bitesm", "BitEsmForMaskedLM", "EsmTokenizer"]
    assert "trust_remote_code" not in proc.stderr


def test_readme_line_with_a_relative_path(model_dir):
    """The issue's command: a relative folder name, stdin closed, no flag."""
    code = ("import bitesm; from transformers import AutoModelForMaskedLM, AutoTokenizer; "
            "AutoModelForMaskedLM.from_pretrained('model'); AutoTokenizer.from_pretrained('model'); print('ok')")
    proc = _python(code, model_dir.parent)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_auto_config_alone(model_dir):
    code = (f"import bitesm\nfrom transformers import AutoConfig\n"
            f"print(type(AutoConfig.from_pretrained({str(model_dir)!r})).__name__)\n")
    proc = _python(code, model_dir.parent)
    assert proc.returncode == 0 and proc.stdout.strip() == "BitEsmConfig", proc.stderr[-2000:]


def test_without_bitesm_the_folder_still_needs_trust_remote_code(model_dir):
    """The registration is what makes the difference (so the tests above can fail)."""
    code = (f"from transformers import AutoModelForMaskedLM\n"
            f"AutoModelForMaskedLM.from_pretrained({str(model_dir)!r})\n")
    proc = _python(code, model_dir.parent)
    assert proc.returncode != 0 and "trust_remote_code" in proc.stderr
