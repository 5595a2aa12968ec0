"""``bitesm push``: upload a model folder or a training run's ``model/`` to the HuggingFace Hub with a generated
model card (:func:`bitesm.hub.push.push_to_hub`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """``DIR --repo-id ORG/NAME [--private] [--revision REV] [--eval FILE] [--commit-message MSG] [--token TOKEN]
    [--dry-run]`` (plus ``--license``, ``--no-tensorboard`` and ``--max-retries``).

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
    parser.add_argument(
        "--dry-run", action="store_true",
        help="print the files that would be uploaded (paths and sizes) and the skipped ones, then stop: nothing is "
        "sent, no token needed",
    )


def cli_main(args: argparse.Namespace) -> int:
    """Run ``bitesm push``: prints the files to upload (paths and sizes) and the skipped ones, then uploads and prints
    a JSON summary; with ``--dry-run`` prints the list on stdout and stops (nothing sent).

    Args:
        args: the parsed arguments of :func:`add_cli_arguments`.

    Returns:
        0 on success; 2 after printing ``bitesm push: error: ...`` when the folder is incomplete or holds a symbolic
        link leaving it, an argument is invalid, no token is found, or the Hub refused the push.
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
            dry_run=args.dry_run,
            report=print if args.dry_run else lambda line: print(line, file=sys.stderr, flush=True),
        )
    except (FileNotFoundError, ValueError, HubPushError) as err:
        print(f"bitesm push: error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"dry run: nothing was sent to {args.repo_id}")
        return 0
    lists = ("files", "plan", "skipped")
    print(json.dumps({k: v for k, v in result.items() if k not in lists}
                     | {"files": len(result["files"]), "skipped": len(result["skipped"])}, indent=2))
    return 0
