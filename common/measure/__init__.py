"""Measurements from masks: LV and LA volumes, ejection fraction, ED/ES (issue 13)."""
