"""landmeta: few-shot land-cover mapping by meta-learning over geographic regions."""

__version__ = "0.1.0"
