"""sunat_sim: the synthetic world and the inspection simulator: a source system, not the product.

It lands extracts in the landing zone as a real administration's systems would, keeps the ground truth
apart (``world_truth/``, which the product never reads) and plays the officers who inspect what the
product selected. ``sunat_pipeline`` never imports it.
"""
