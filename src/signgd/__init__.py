"""signgd: convert trained PyTorch networks into spiking neural networks with sign-gradient-descent
neuronal dynamics (Oh & Lee, ICML 2024)."""
from .launch import choose_wait_policy

choose_wait_policy()  # the signgd command only, before torch loads (signgd.launch)

from . import data, nir, schedules  # signgd.nir imports the nir package only when it exports
from .convert import convert
from .errors import (
    CalibrationError,
    ConversionError,
    ExportError,
    InputError,
    SigngdError,
    TraceError,
    UnsupportedOperationError,
)
from .evaluate import EvaluationReport, evaluate
from .network import SpikingNetwork
from .neurons import SpikingNeuron
from .serialize import SnnFileError, load
from .simulator import SimulationResult
from .version import __version__

__all__ = ["convert", "evaluate", "SpikingNetwork", "SpikingNeuron", "SimulationResult", "EvaluationReport",
           "schedules", "data", "SigngdError", "ConversionError", "TraceError", "UnsupportedOperationError",
           "CalibrationError", "InputError", "ExportError", "SnnFileError", "load", "nir", "__version__"]
