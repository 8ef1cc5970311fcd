"""Alerts in the formats other systems speak: Cursor on Target for TAK, STIX 2.1."""
