from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sessions.adapters.kubernetes import crd
from sessions.domain.model import TRANSITIONS

pytestmark = pytest.mark.unit

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "botsessions.yaml"


def test_the_committed_crd_is_the_generated_one() -> None:
    assert CRD_FILE.read_text() == crd.render(), (
        "crds/botsessions.yaml drifted: run `botsession crd > crds/botsessions.yaml`"
    )


def test_every_table_pair_appears_in_the_transition_rule() -> None:
    rule = crd.transition_rule()
    for frm, to in TRANSITIONS:
        if frm is not None:
            assert f"oldSelf.status.phase == '{frm}' && self.status.phase == '{to}'" in rule


def test_printer_columns_cover_the_essentials() -> None:
    version = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]
    names = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert names == ["Status", "Bot", "User", "Last Seen", "Expires", "Age"]
