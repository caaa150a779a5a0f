"""Commissioning measures (issue 7): assessment facts, reasons for delay, Measure/MeasureReport; plain
functions, no SQL and no HTTP (the SQL is adapter/store/facts_sql.py)."""
