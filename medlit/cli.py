"""The ``medlit`` command line: build the book, run one chapter, train the models, list the registries."""

from __future__ import annotations

import argparse
import sys

from medlit.device import DEVICE_CHOICES
from medlit.profiles import PROFILES

DEVICE_HELP = "where models train and explain: auto (CUDA when there is one; default, or $MEDLIT_DEVICE), cpu, cuda"
SCHEDULER_HELP = ("where the chapters score their shards (data set x model x method): in this process (default, or "
                  "$MEDLIT_SCHEDULER), local:N for a local Dask cluster of N workers, or a running Dask scheduler's "
                  "address such as tcp://10.0.0.5:8786 (workers must see the same results folder)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medlit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    book = sub.add_parser("book", help="train/load models, execute every chapter, build the HTML book")
    book.add_argument("--profile", default="quick", choices=list(PROFILES))
    book.add_argument("--force", action="store_true", help="re-execute every chapter even if up to date")
    book.add_argument("--data", default="", metavar="ADAPTER=FOLDER[:KEY=VALUE...][,...]",
                      help="also score real data sets read by an adapter, e.g. nih-cxr14=/data/nih "
                           "(adapters: nih-cxr14, rsna-pneumonia, vindr-cxr, ddr-lesions, coco); adapter options "
                           "follow the folder as :KEY=VALUE, e.g. nih-cxr14=/data/nih:errors=skip or "
                           "'vindr-cxr=/data/vindr:merge=majority:classes=Nodule/Mass|Aortic enlargement' (list "
                           "items separated by |, so quote the value for the shell); each data card lists its "
                           "adapter's options. The files are checked before any model trains")
    book.add_argument("--device", default=None, choices=DEVICE_CHOICES, help=DEVICE_HELP)
    book.add_argument("--scheduler", default=None, metavar="local:N|ADDRESS", help=SCHEDULER_HELP)

    chapter = sub.add_parser("chapter", help="execute one chapter with papermill (by file stem)")
    chapter.add_argument("name", help="e.g. 10_gradient_activation")
    chapter.add_argument("--profile", default="quick", choices=list(PROFILES))
    chapter.add_argument("--force", action="store_true")
    chapter.add_argument("--data", default="", metavar="ADAPTER=FOLDER[:KEY=VALUE...][,...]",
                         help="as for `medlit book`")
    chapter.add_argument("--device", default=None, choices=DEVICE_CHOICES, help=DEVICE_HELP)
    chapter.add_argument("--scheduler", default=None, metavar="local:N|ADDRESS", help=SCHEDULER_HELP)

    train = sub.add_parser("train", help="train (or load from the cache) the model of a profile")
    train.add_argument("--profile", default="quick", choices=list(PROFILES))
    train.add_argument("--dataset", default="cxr-phantom")
    train.add_argument("--model", default="resnet10", help="a registered model kind (see `medlit list`)")
    train.add_argument("--device", default=None, choices=DEVICE_CHOICES, help=DEVICE_HELP)

    refresh = sub.add_parser("refresh-checks", help="store the smoke-profile outputs that nbval compares "
                                                    "(cells marked NBVAL_CHECK_OUTPUT) in the chapter sources")
    refresh.add_argument("names", nargs="*", help="chapter file stems (default: all)")

    sub.add_parser("list", help="list registered data sets, model kinds, explainers and metrics")

    args = parser.parse_args(argv)
    try:
        if args.command == "book":
            from medlit.book import build_book
            build_book(args.profile, force=args.force, data=args.data, device=args.device,
                       scheduler=args.scheduler)
        elif args.command == "chapter":
            from medlit.book import chapters, execute_chapter
            match = [c for c in chapters() if c.name == args.name]
            if not match:
                names = ", ".join(c.name for c in chapters())
                parser.error(f"no chapter {args.name!r} in _toc.yml; chapters: {names}")
            from medlit.cluster import scheduler
            with scheduler(args.scheduler):
                print(execute_chapter(match[0], args.profile, data=args.data, force=args.force,
                                      device=args.device))
        elif args.command == "train":
            from medlit.benchmark import prepare
            prepared = prepare(args.profile, args.dataset, model=args.model, device=args.device)
            r = prepared.record
            print(f"{r['name']} ({r['digest']}) on {prepared.device}: test AUROC {r['test_auroc']:.3f}, "
                  f"accuracy {r['test_accuracy']:.3f}")
        elif args.command == "refresh-checks":
            from medlit.book import chapters, refresh_checked_outputs
            for ch in chapters():
                if not args.names or ch.name in args.names:
                    print(f"{ch.name}: {refresh_checked_outputs(ch)} checked cells stored")
        elif args.command == "list":
            from medlit.data import DATASETS
            from medlit.explain import EXPLAINERS
            from medlit.metrics import METRICS
            from medlit.data.adapters import ADAPTERS
            from medlit.models import MODEL_KINDS
            for name in DATASETS:
                print(f"dataset   {name:24s} {DATASETS[name].description}")
            for spec in ADAPTERS.values():
                print(f"adapter   {spec.name:24s} {spec.description} (--data {spec.name}=FOLDER)")
            for kind in MODEL_KINDS.values():
                print(f"model     {kind.name:24s} {kind.long_name}; offers {', '.join(sorted(kind.capabilities))}")
            for spec in EXPLAINERS.values():
                needs = f" (needs {', '.join(spec.needs)})" if spec.needs else ""
                print(f"explainer {spec.name:24s} {spec.family:12s} {spec.long_name}{needs}")
            for spec in METRICS.values():
                print(f"metric    {spec.name:24s} {spec.kind:12s} {spec.direction} is better")
    except (RuntimeError, KeyError, ValueError, FileNotFoundError) as err:
        print(f"medlit: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
