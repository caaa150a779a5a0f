"""Plain domain functions of the pathway: working-day clocks, RHA schedule, Task states,
routing. No HTTP, no database: the store and the API call them.
"""
