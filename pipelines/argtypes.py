"""Typed command-line values: ranged integers and numbers that fail as one argparse error line
("argument --tile: must be an integer >= 1, got '-4'") before any work starts."""
from __future__ import annotations

import argparse
import math


def count(lo: int = 1, hi: int | None = None):
    """An integer >= ``lo`` (and <= ``hi``)."""
    what = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return v
    parse.__name__ = what[3:]
    return parse


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False):
    """A finite number in the given (closed unless ``*_open``) range."""
    lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
    what = ("a number" if lo is None and hi is None else
            f"a number > {lo:g}" if hi is None and lo_open else
            f"a number >= {lo:g}" if hi is None else
            f"a number in {lb}{lo:g}, {hi:g}{rb}")

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        bad = (not math.isfinite(v)
               or (lo is not None and (v <= lo if lo_open else v < lo))
               or (hi is not None and (v >= hi if hi_open else v > hi)))
        if bad:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return v
    parse.__name__ = what
    return parse


fraction = number(0.0, 1.0)


class _Renamed(argparse.Action):
    """An old spelling of a renamed option: parses as before into the new option's ``dest``,
    hidden from ``--help``. Silent, so that scripts and error output (one line) stay as they were."""

    def __init__(self, option_strings, dest, new: str = "", flag_const=None, **kw):
        self.new, self.flag_const = new, flag_const
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.flag_const if self.nargs == 0 else values)


def renamed(parser, old: str, new: str, *, flag_value=None, **kw) -> None:
    """Keep ``old`` working as a hidden alias of the option ``new`` already added to ``parser``
    (same destination and type). ``flag_value``: the value a no-argument flag stores
    (``store_true`` -> True); pass ``nargs``/``type``/``choices`` as the new option has them."""
    action = next(a for a in parser._actions if new in a.option_strings)
    if flag_value is not None:
        kw["nargs"] = 0
    else:
        kw.setdefault("type", action.type)
        kw.setdefault("choices", action.choices)
        kw.setdefault("nargs", action.nargs)
        kw.setdefault("metavar", action.metavar or action.dest.upper())
    parser.add_argument(old, action=_Renamed, dest=action.dest, new=new, flag_const=flag_value,
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kw)
