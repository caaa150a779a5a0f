"""Commissioning measures (issue 7): assessment facts, SSDA903 OC2 outcomes, reasons for delay,
Measure/MeasureReport; plain functions, no SQL and no HTTP (the SQL is adapter/store/facts_sql.py,
oc2_sql.py and measure_sql.py)."""
