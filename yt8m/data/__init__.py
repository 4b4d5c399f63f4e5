"""The data layer: TFRecord framing, Example wire format, YouTube-8M records, the loader,
model inputs and synthetic datasets (see docs/architecture.md, "Data")."""
