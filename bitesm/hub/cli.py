"""``bitesm push``: upload a model folder or a training run's ``model/`` to the HuggingFace Hub with a generated
model card (:func:`bitesm.hub.push.push_to_hub`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """``DIR --repo-id ORG/NAME [--private] [--revision REV] [--eval FILE] [--commit-message MSG] [--token TOKEN]``
    (plus ``--license``, ``--no-tensorboard`` and ``--max-retries``).

    Args:
        parser: the ``push`` subparser of ``bitesm``.
    """
    parser.add_argument("dir", metavar="DIR", help="model folder (config.json, weights, tokenizer) or run folder (model/)")
    parser.add_argument("--repo-id", required=True, help="Hub model repository, ORG/NAME (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing; default main)")
    parser.add_argument(
        "--eval", dest="eval_json", default=None, metavar="FILE",
        help="ProteinGym results JSON for the card (default: the newest in DIR/eval/ or DIR/../eval/)",
    )
    parser.add_argument("--commit-message", default=None, help="commit message (default 'Upload NAME with bitesm')")
    parser.add_argument(
        "--token", default=None,
        help="Hub token with write access (default: HF_TOKEN or the cached 'hf auth login' token)",
    )
    parser.add_argument("--license", default=None, help="license id for the card's metadata, e.g. mit")
    parser.add_argument("--no-tensorboard", action="store_true", help="leave the run's TensorBoard event files out")
    parser.add_argument("--max-retries", type=int, default=5, help="retries of each Hub call on network errors")


def cli_main(args: argparse.Namespace) -> int:
    """Run ``bitesm push``; prints a JSON summary.

    Args:
        args: the parsed arguments of :func:`add_cli_arguments`.

    Returns:
        0 on success; 2 after printing ``bitesm push: error: ...`` when the folder is incomplete, an argument is
        invalid or the Hub refused the push.
    """
    from .push import HubPushError, push_to_hub

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = push_to_hub(
            args.dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            token=args.token,
            commit_message=args.commit_message,
            eval_json=args.eval_json,
            include_tensorboard=not args.no_tensorboard,
            license=args.license,
            max_retries=args.max_retries,
        )
    except (FileNotFoundError, ValueError, HubPushError) as err:
        print(f"bitesm push: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in result.items() if k != "files"} | {"files": len(result["files"])}, indent=2))
    return 0
