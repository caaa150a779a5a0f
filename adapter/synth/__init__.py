"""Deterministic synthetic populations (`lac-adapter fixtures generate`).

- `settings`: config/synthetic.toml, the distributions (each calibrated to a figure it names);
- `population`: each child's story as plain dataclasses, drawn from a random.Random seeded by
  the population seed and the child's index (so children stream and regenerate alone), with
  the project's working-day clock and RHA schedule (adapter/pathway);
- `emit_notifications`, `emit_forms`, `emit_903`: the story as the partner documents the
  adapter reads (LA notification XML, health assessment form XML, SSDA903 CSV and XML);
- `emit_fhir`: those documents mapped by the project's own mappers (with a cache of mapped
  prototypes that gives the same bytes faster), and folded into the resources a server holds;
- `writer`: everything streamed to disk, shard by shard, by worker processes.
"""
