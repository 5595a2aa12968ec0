"""``bitesm push``, over :func:`bitesm.hub.push.push_to_hub`. The parser imports only the standard library."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ._model_options import check_at_least, required_group

DESCRIPTION = (
    "Upload a model folder, or a training run's model/, to a Hugging Face Hub model repository in one commit, with a "
    "generated model card. Only the files of a model are sent (config, weights, tokenizer, code, card, training and "
    "evaluation records), never dotfiles; the list is printed first, and --dry-run prints it and sends nothing."
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``bitesm push`` to the ``bitesm`` subparsers ``commands``."""
    parser = commands.add_parser("push", help="upload a model or run folder to the HuggingFace Hub with a model card",
                                 description=DESCRIPTION)
    parser.add_argument("dir", metavar="DIR", help="model folder (config.json, weights, tokenizer) or run folder "
                        "(model/)")
    required_group(parser).add_argument("--repo-id", required=True,
                                        help="Hub model repository, ORG/NAME (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing; default main)")
    parser.add_argument("--eval", dest="eval_json", default=None, metavar="FILE",
                        help="ProteinGym results JSON for the card (default: the newest in DIR/eval/ or DIR/../eval/)")
    parser.add_argument("--commit-message", default=None, help="commit message (default 'Upload NAME with bitesm')")
    parser.add_argument("--token", default=None,
                        help="Hub token with write access (default: HF_TOKEN or the cached 'hf auth login' token)")
    parser.add_argument("--license", default=None, help="license id for the card's metadata, e.g. mit")
    parser.add_argument("--no-tensorboard", action="store_true", help="leave the run's TensorBoard event files out")
    parser.add_argument("--max-retries", type=int, default=5,
                        help="retries of each Hub call on server errors and timeouts (default 5)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the files that would be uploaded (paths and sizes) and the skipped ones, then "
                        "stop: nothing is sent, no token needed")
    parser.set_defaults(handler=run_push)


def run_push(args: argparse.Namespace) -> int:
    """``bitesm push``: print the files to upload (paths and sizes) and the skipped ones, upload, print a JSON
    summary; with ``--dry-run`` print the list on stdout and stop (nothing sent). Returns 0.

    Raises:
        HubPushError: the folder is incomplete or holds a symbolic link leaving it, an argument is invalid, no token
            is found, or the Hub refused the push (a :class:`bitesm.errors.UserInputError`).
    """
    check_at_least(args.max_retries, "--max-retries", 0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..hub.push import push_to_hub

    result = push_to_hub(
        args.dir, args.repo_id, private=args.private, revision=args.revision, token=args.token,
        commit_message=args.commit_message, eval_json=args.eval_json, include_tensorboard=not args.no_tensorboard,
        license=args.license, max_retries=args.max_retries, dry_run=args.dry_run,
        report=print if args.dry_run else lambda line: print(line, file=sys.stderr, flush=True),
    )
    if args.dry_run:
        print(f"dry run: nothing was sent to {args.repo_id}")
        return 0
    lists = ("files", "plan", "skipped")
    print(json.dumps({k: v for k, v in result.items() if k not in lists}
                     | {"files": len(result["files"]), "skipped": len(result["skipped"])}, indent=2))
    return 0
