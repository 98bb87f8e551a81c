"""Quantization machinery: calibration statistics and observers, target placement profiles, the
QDQ quantizer, sensitivity and mixed precision, and exact integer execution (the quantize pass in
graphopt.passes.quantize drives them)."""

from graphopt.quant.calibration import Calibration, CalibrationError, Statistics, load_calibration
from graphopt.quant.observers import METHODS, Histogram, QParams, observe_range
from graphopt.quant.placement import ORT_CPU, PROFILES, Plan, Profile, plan
from graphopt.quant.quantizer import Scheme, apply_plan
from graphopt.quant.sensitivity import Sensitivity, sqnr_db

__all__ = [
    "METHODS", "ORT_CPU", "PROFILES", "Calibration", "CalibrationError", "Histogram", "Plan", "Profile", "QParams",
    "Scheme", "Sensitivity", "Statistics", "apply_plan", "load_calibration", "observe_range", "plan", "sqnr_db",
]
