"""``bitesm eval ...`` and ``bitesm embed`` (bitesm.cli.evaluate, bitesm.cli.embed): parsers built from the standard
library alone, literal choices that agree with the library, help texts, and the checks a command makes before it
loads a model (device, output path, option ranges, layer)."""

from __future__ import annotations

import argparse
import inspect
import json
import re
import subprocess
import sys

import pytest
import torch
from transformers import EsmTokenizer

from bitesm.cli import embed as embed_cli
from bitesm.cli import evaluate as evaluate_cli
from bitesm.cli import main as bitesm_main
from bitesm.cli._model_options import DTYPE_NAMES
from bitesm.errors import UserInputError

from conftest import ESM_DIR, REPO, tiny_esm


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """``{"eval proteingym": parser, ..., "embed": parser}`` built by the two modules' ``register``."""
    root = argparse.ArgumentParser(prog="bitesm")
    commands = root.add_subparsers(dest="command")
    evaluate_cli.register(commands)
    embed_cli.register(commands)
    found = {"embed": commands.choices["embed"]}
    suites = next(a for a in commands.choices["eval"]._actions if isinstance(a, argparse._SubParsersAction))
    found.update({f"eval {name}": parser for name, parser in suites.choices.items()})
    return found


def test_parsers_and_help_import_no_library_code():
    code = (
        "import argparse, sys\n"
        "from bitesm.cli import evaluate, embed\n"
        "root = argparse.ArgumentParser(prog='bitesm'); commands = root.add_subparsers(dest='command')\n"
        "evaluate.register(commands); embed.register(commands)\n"
        "for argv in (['eval', '--help'], ['eval', 'proteingym', '--help'], ['eval', 'run', '--help'],\n"
        "             ['eval', 'watch', '--help'], ['eval', 'compare', '--help'], ['eval', 'contacts', '--help'],\n"
        "             ['eval', 'go', '--help'], ['embed', '--help']):\n"
        "    try:\n"
        "        root.parse_args(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'numpy', 'pandas')\n"
        "                or m.startswith('bitesm.') and not m.startswith('bitesm.cli'))\n"
        "print('LOADED', loaded)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    # bitesm's own light package modules (standard library only), nothing else
    light = ["bitesm.auto_registration", "bitesm.errors", "bitesm.lazy", "bitesm.runtime"]
    assert proc.stdout.splitlines()[-1] == f"LOADED {light}", proc.stdout[-2000:]


def test_literal_choices_and_defaults_equal_the_library():
    from bitesm.evaluation import go_prediction
    from bitesm.evaluation.contacts import DEFAULT_C, DEFAULT_N_TRAIN
    from bitesm.evaluation.embeddings import embed_sequences
    from bitesm.evaluation.model_loading import DTYPES
    from bitesm.evaluation.run import SUITES
    from bitesm.evaluation.scoring import STRATEGIES

    assert DTYPE_NAMES == tuple(DTYPES)
    assert evaluate_cli.STRATEGIES == STRATEGIES
    assert evaluate_cli.SUITE_NAMES == tuple(sorted(SUITES))
    assert evaluate_cli.GO_SELECTIONS == go_prediction.SELECTIONS
    assert (evaluate_cli.CONTACTS_N_TRAIN, evaluate_cli.CONTACTS_C) == (DEFAULT_N_TRAIN, DEFAULT_C)
    assert evaluate_cli.GO_MIN_COUNT == go_prediction.SUITE_DEFAULTS["min_count"]
    assert evaluate_cli.GO_MAX_TOKENS == go_prediction.SUITE_DEFAULTS["max_tokens"]
    assert {k: v for k, v in evaluate_cli.GO_FILE_OPTIONS.items()} == {
        k: p.name for k, p in go_prediction.DEFAULT_GO_DATA.items()}
    assert embed_cli.MAX_TOKENS == inspect.signature(embed_sequences).parameters["max_tokens"].default


def test_every_command_has_a_description_and_every_option_a_help():
    parsers = _parsers()
    assert set(parsers) == {"embed", "eval proteingym", "eval run", "eval watch", "eval compare", "eval contacts",
                            "eval go"}
    for name, parser in parsers.items():
        description = parser.description or ""
        assert description.endswith(".") and "``" not in description and len(description) > 60, name
        required = [a for a in parser._actions if a.required and a.option_strings]
        groups = {a.dest: g.title for g in parser._action_groups for a in g._group_actions}
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 10, (name, action.dest)
        for action in required:
            assert groups[action.dest] == "required arguments", (name, action.dest)
        if required:
            assert "required arguments:" in parser.format_help(), name


def test_required_options_of_each_command():
    parsers = _parsers()

    def required(name):
        return sorted(a.option_strings[0] for a in parsers[name]._actions if a.required and a.option_strings)

    assert required("eval proteingym") == ["--model"]
    assert required("eval run") == ["--model", "--output"]
    assert required("eval contacts") == ["--model", "--output"]
    assert required("eval go") == ["--model", "--output"]
    assert required("embed") == ["--fasta", "--model", "--output"]
    assert required("eval compare") == required("eval watch") == []


# ----------------------------------------------------------------------------- checks before the model is loaded
def test_resolve_device_names_the_value_and_the_fix():
    from bitesm.evaluation.model_loading import DeviceError, ModelLoadError, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda")
    with pytest.raises(DeviceError, match=r"--device tpu9: not a torch device name.*use --device cpu"):
        resolve_device("tpu9", option="--device")
    with pytest.raises(DeviceError, match=r"device='meta': bitesm evaluates on cpu, cuda, mps only"):
        resolve_device("meta")
    assert issubclass(DeviceError, ModelLoadError) and issubclass(DeviceError, UserInputError)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match=rf"--device cuda: CUDA is not available on this machine \(torch "
                                              rf"{re.escape(torch.__version__)}.*\); use --device cpu or leave "
                                              "--device out"):
            resolve_device("cuda", option="--device")
    else:
        with pytest.raises(DeviceError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        with pytest.raises(DeviceError, match="--device mps: the Apple MPS backend is not available"):
            resolve_device("mps", option="--device")


@pytest.mark.parametrize("argv", [
    ["embed", "--fasta", "x.fasta", "--output", "o.safetensors"],
    ["eval", "proteingym"],
    ["eval", "contacts", "--output", "c.json"],
    ["eval", "go", "--output", "go"],
    ["eval", "run", "--output", "r"],
])
def test_a_bad_device_fails_before_the_model_is_loaded(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bitesm_main(argv + ["--model", str(tmp_path / "no_model"), "--device", "tpu9"]) == 2
    err = capsys.readouterr().err
    assert f"bitesm {' '.join(argv[:2]) if argv[0] == 'eval' else 'embed'}: error: --device tpu9" in err
    assert "no_model" not in err and len(err.strip().splitlines()) == 1


def test_eval_run_errors_name_the_subcommand_whatever_the_suites(tmp_path, capsys):
    assert bitesm_main(["eval", "run", "--model", "m", "--output", str(tmp_path / "o"), "--suite", "go,fold"]) == 2
    assert capsys.readouterr().err.startswith("bitesm eval run: error: unknown suite(s) ['fold']")


@pytest.mark.parametrize("argv,output", [
    (["embed", "--fasta", "x.fasta"], "a_file/o.safetensors"),
    (["eval", "proteingym"], "a_file/pg.json"),
    (["eval", "contacts"], "a_file/c.json"),
    (["eval", "go"], "a_file/go"),
    (["eval", "run"], "a_file/run"),
])
def test_an_output_that_cannot_be_written_fails_before_the_model_is_loaded(argv, output, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder\n")
    assert bitesm_main(argv + ["--model", str(tmp_path / "no_model"), "--device", "cpu",
                               "--output", str(tmp_path / output)]) == 2
    err = capsys.readouterr().err
    assert f"error: --output {tmp_path / output} is under {tmp_path / 'a_file'}, which is a file" in err
    assert "no_model" not in err.replace(str(tmp_path / output), "")


def test_compare_output_is_checked_before_reading_results(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert bitesm_main(["eval", "compare", "x.json", "y.json", "--output", str(tmp_path / "a_file")]) == 2
    assert f"--output {tmp_path / 'a_file'} is a file, not a folder" in capsys.readouterr().err


def test_check_writable_leaves_no_probe(tmp_path):
    from bitesm.io import check_writable

    out = tmp_path / "new" / "deeper" / "out.json"
    assert check_writable(out) == out
    assert not any(p.name.startswith(".bitesm-write-test") for p in tmp_path.rglob("*"))
    with pytest.raises(UserInputError, match="is a folder; give the path of a file"):
        check_writable(tmp_path, option="--output")


# ----------------------------------------------------------------------------- embed: layer range
@pytest.fixture(scope="module")
def tok():
    return EsmTokenizer.from_pretrained(str(ESM_DIR))


def test_embed_layer_out_of_range_fails_before_embedding(tok, tmp_path, capsys):
    from bitesm.evaluation.embeddings import EmbeddingInputError, embed_sequences

    model = tiny_esm()  # 2 layers: hidden states 0..2
    forwards = []
    model.esm.register_forward_pre_hook(lambda *a: forwards.append(1))
    with pytest.raises(EmbeddingInputError, match=r"layer=99 is out of range for a model with 2 layers: hidden "
                                                  r"states 0\.\.2"):
        embed_sequences(model, tok, [("p", "MKTAYIAK")], layer=99)
    with pytest.raises(EmbeddingInputError, match=r"layer=-4"):
        embed_sequences(model, tok, [("p", "MKTAYIAK")], layer=-4)
    assert forwards == []
    assert embed_sequences(model, tok, [("p", "MKTAYIAK")], layer=-3).mean.shape == (1, 32)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    (tmp_path / "p.fasta").write_text(">p\nMKTAYIAK\n")
    capsys.readouterr()
    command = ["embed", "--model", str(tmp_path / "model"), "--fasta", str(tmp_path / "p.fasta"), "--device", "cpu",
               "--output", str(tmp_path / "e.safetensors")]
    assert bitesm_main(command + ["--layer", "99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar of the loading
    assert err.startswith("bitesm embed: error: layer=99 is out of range") and "0..2" in err
    assert not (tmp_path / "e.safetensors").exists()
    assert bitesm_main(command + ["--max-tokens", "0"]) == 2
    assert "bitesm embed: error: --max-tokens must be >= 1, got 0" in capsys.readouterr().err
    assert bitesm_main(command + ["--layer", "1"]) == 0
    assert "wrote" in capsys.readouterr().out


# ----------------------------------------------------------------------------- library errors are user errors
def test_proteingym_input_files_raise_user_errors(tmp_path):
    from bitesm.evaluation.proteingym import (
        ProteinGymFileNotFoundError,
        find_assay_files,
        load_assay,
        load_reference,
    )
    from bitesm.evaluation.scoring import ProteinGymInputError

    with pytest.raises(ProteinGymFileNotFoundError, match="nowhere does not exist") as info:
        find_assay_files(tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, UserInputError)
    with pytest.raises(FileNotFoundError, match="missing.csv does not exist"):
        load_reference(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ProteinGymInputError, match="empty.csv cannot be read as a CSV"):
        load_assay(tmp_path / "empty.csv")
    (tmp_path / "nan.csv").write_text("mutant,DMS_score\nA1C,nan\nA1D,\n")
    with pytest.raises(ProteinGymInputError, match="nan.csv: no row has a numeric DMS_score"):
        load_assay(tmp_path / "nan.csv")


def test_go_options_raise_user_errors(tmp_path):
    from bitesm.evaluation.go_prediction import GoClassifier, GoInputError, select_terms

    with pytest.raises(GoInputError, match="min_count must be >= 1"):
        select_terms({}, 0)
    with pytest.raises(GoInputError, match="dropout"):
        GoClassifier(dropout=1.5)
    assert issubclass(GoInputError, UserInputError)


def test_compare_reference_defaults_to_the_repository_file():
    from bitesm.evaluation.compare import DEFAULT_REFERENCE, compare

    assert DEFAULT_REFERENCE == REPO / "data" / "proteingym" / "reference" / "DMS_substitutions.csv"
    assert inspect.signature(compare).parameters["reference_csv"].default is None


def test_contacts_table_is_text(tmp_path):
    from bitesm.evaluation.contacts import format_table

    result = {"structures": [{"name": "s1", "split": "test", "chain": "A", "length": 50, "n_valid": 50,
                              "n_contacts": {"long": 10}, "n_pairs": {"long": 100},
                              "precision": {"long": {"P@L": 0.5, "P@L/2": None, "P@L/5": 1.0}}, "seconds": 0.1}],
              "mean": {r: {"P@L": 0.5, "P@L/2": None, "P@L/5": 1.0} for r in ("long", "medium", "short")},
              "chance": {r: 0.1 for r in ("long", "medium", "short")}, "n_test": 1, "train": ["s0"],
              "regression": {"n_pairs": 10, "n_contacts": 2, "n_nonzero": 3}, "seconds": 1.0, "skipped": []}
    text = format_table(json.loads(json.dumps(result)))
    assert "s1" in text and "mean (1 test, long range)" in text and not text.endswith("\n")
