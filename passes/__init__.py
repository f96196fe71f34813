"""Graph -> Graph passes: autodiff (VJP table), simplification."""
from .autodiff import grad, value_and_grad
from .simplify import dce
from .vjp_rules import VJP

__all__ = ["grad", "value_and_grad", "dce", "VJP"]
