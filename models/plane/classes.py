"""SonoNet-16's fourteen classes (``PlaneClass``), in its output order: light, for the CLI and the API to name them."""

from __future__ import annotations

from enum import StrEnum


class PlaneClass(StrEnum):
    """SonoNet-16's classes, in its output order (``fetalhc results --plane <value>``)."""

    THREE_VV = "3vv"  # three-vessel view
    FOUR_CH = "4ch"  # four-chamber view
    ABDOMINAL = "abdominal"
    BACKGROUND = "background"  # none of the standard planes
    BRAIN_CB = "brain_cb"  # trans-cerebellar
    BRAIN_TV = "brain_tv"  # trans-ventricular (trans-thalamic heads mostly come out as this)
    FEMUR = "femur"
    KIDNEYS = "kidneys"
    LIPS = "lips"
    LVOT = "lvot"
    PROFILE = "profile"
    RVOT = "rvot"
    SPINE_CORONAL = "spine_coronal"
    SPINE_SAGITTAL = "spine_sagittal"


CLASSES: tuple[PlaneClass, ...] = tuple(PlaneClass)
HEAD_CLASSES = (PlaneClass.BRAIN_CB, PlaneClass.BRAIN_TV)  # the head biometry planes among them
