"""The family table: the four families are flat modules with the same surface (`OPTIONS`, `loss`, `sample`), chosen
by one dict lookup. Its own module so that everything that needs the table (checkpoint.py checks a checkpoint's
options against it; train.py, sample.py and the judges pick a family by name) imports it without an import circle."""
from . import ar, duo, eso, mdlm

FAMILIES = {'ar': ar, 'mdlm': mdlm, 'duo': duo, 'eso': eso}
FAMILY_NAMES = tuple(FAMILIES)


def get_family(name):
    if name not in FAMILIES:
        raise ValueError(f"unknown --family {name!r}; valid families: {', '.join(FAMILY_NAMES)}")
    return FAMILIES[name]
