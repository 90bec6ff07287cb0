"""The ``epiflow`` command line.

Each subcommand lives in its own module that exposes ``add_arguments(parser)`` and ``run(args)``;
modules are imported only when their subcommand runs, so ``epiflow --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from pipelines.errors import EpiflowError

# name -> (module, one-line help). Keep alphabetical within groups.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pipelines.stages.demo", "generate the embedded cohort and run the whole DVC pipeline"),
    "simulate": ("pipelines.stages.simulate", "write the embedded simulated cohort (VCF, samples, GMT, truth)"),
    "encode": ("pipelines.stages.encode", "stream a VCF into gene x class counts and a variant matrix"),
    "ingest-bed": ("pipelines.stages.ingest_bed", "read a PLINK 1 fileset into the int8 SNP dosage matrix, with filters and phenotype join"),
    "splits": ("pipelines.stages.splits", "write repeated stratified K-fold splits shared by all models"),
    "train": ("pipelines.stages.train", "cross-validate one model of the zoo on the shared splits"),
    "learning-curve": ("pipelines.stages.learning_curve", "AUC against training-set size (nested subsets of each fold), corrected t-test and crossover"),
    "sweep": ("pipelines.stages.sweep", "sparsity-degree sweep of a sparse model on the shared splits"),
    "tune": ("pipelines.stages.tune", "Optuna study of a zoo model (inner CV) or of NGG; --rerun-best registers the winner"),
    "interpret": ("pipelines.stages.interpret", "which genes and pathways drive a gene net, and which gene pairs interact (Captum)"),
    "report": ("pipelines.stages.report", "print and save the model comparison table"),
    "compare": ("pipelines.stages.compare", "models or MLflow runs side by side, with corrected t-tests over shared folds"),
    "scan": ("pipelines.stages.scan", "exact or NGG 1D/2D scans of a phenotype over a PLINK fileset"),
    "ngg": ("pipelines.stages.ngg", "DVC stages ngg_pheno, ngg_1d, ngg_2d, heritability (settings: ngg: in params.yaml)"),
    "view": ("pipelines.stages.view", "the map of a 2D scan in the browser: pan, zoom, hover and pair cards"),
    "export-cool": ("pipelines.stages.export_cool", "write a 2D scan's map as a multi-resolution .mcool (max aggregation) for HiGlass"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported as one line (``epiflow scan: error: argument --tile:
    must be an integer >= 1, got '-4'``; ``--help`` shows the usage) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already names it (``default:
    encode.vcf in params.yaml``) or there is none to show (a flag, an unset optional value)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or not action.option_strings or action.default == []):
            return text
        return f"{text} (default: %(default)s)"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="epiflow",
        description="Do epistatic models beat additive ones on your cohort? Data with DVC, runs in MLflow.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=_HelpFormatter)
        if only is None or only == name:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # import only the module of the subcommand being run (or all of them for help on one)
    name = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=name if name in COMMANDS else "__none__")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        if args.command != "demo":         # demo reads --params under the project root
            from pipelines.params import check_params_flag

            check_params_flag(getattr(args, "params", None))
        rc = module.run(args)
    except EpiflowError as exc:
        print(f"epiflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # a read-only or full disk, a missing or unreadable file: the file and the reason, one line
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"epiflow {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"epiflow {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
