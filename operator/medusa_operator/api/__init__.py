"""The MedusaModel API types (pydantic), from which the CRD is generated."""

from .v1alpha1 import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    MedusaModel,
    MedusaModelSpec,
    MedusaModelStatus,
)

__all__ = ["GROUP", "KIND", "PLURAL", "VERSION", "MedusaModel", "MedusaModelSpec", "MedusaModelStatus"]
