"""Scale-out on Ray (``pip install 'ebjr[ray]'``).

- :mod:`ebjr.ray.serve`: the joint model as a Ray Serve application
  (``build_app``; ``serve run ebjr.ray.serve:app bundle=...``;
  ``ebjr serve BUNDLE --ray``): ingress, student and teacher deployments that
  scale on their own, one shared threshold.
- :mod:`ebjr.ray.data`: cascaded batch inference over a Ray Dataset
  (``joint_map_batches``; ``ebjr predict BUNDLE INPUT --ray``).
- :mod:`ebjr.ray.control`: the shared routing state (plain Python, tested without Ray).

The submodules import Ray; this package does not, so ``import ebjr.ray`` works
without it and the submodules say which extra to install.
"""
