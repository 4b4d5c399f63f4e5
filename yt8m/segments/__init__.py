"""The 2019 segment task (successors.md §2): fine-tuning on rated 5-frame segments,
segment inference with the best ``--segment_max_pred`` segments per whitelisted class,
and MAP@K of a ``Class,Segments`` submission. One job per module; docs/architecture.md
lists them."""
