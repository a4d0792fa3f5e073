"""The library's version: in its own module so that the modules recording it (saved networks,
reports, ``--version``) need not import the package's ``__init__``, which imports them."""

__version__ = "0.1.0"
