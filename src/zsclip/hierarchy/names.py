"""The names tree and open-set options choose from: plain data, so that parsing options (and every
``--help``) imports no torch."""

#: How a label tree answers (see ``modes``).
MODES = ("flat", "top-down", "chils")
#: Open-set scores (see ``openset``): MCM and the classifier's top probability.
SCORES = ("mcm", "max-prob")
#: The label a rejected image gets.
DEFAULT_REJECT_LABEL = "none"
