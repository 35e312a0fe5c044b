"""The rollout of a new release over a live one (docs/rollouts.md); flows/rollout.py drives it step by step.

- :mod:`.plan`: the steps a strategy takes and ``decide``, the pure transition from what happened to what next;
- :mod:`.state`: the rollout's phase, stage and weight, kept in the cluster (ConfigMap ``<serving>-rollout``);
- :mod:`.canary`: the preview and canary Ingresses (twins of the live one) and the new release's HPA;
- :mod:`.probe`: proof that the preview host and the canary header reach the new release;
- :mod:`.capacity`: replicas Available before any traffic moves;
- :mod:`.analysis`: each step judged on the users' requests per version from SLS and on synthetic requests;
- :mod:`.quiet`: the previous release retired only once SLS shows its route quiet;
- :mod:`.versions`: promote, remove, retire, prune, recover; never the release the main Ingress routes to;
- :mod:`.report`: ``rollout.md``/``.json``/``.png`` and the Prefect artifact.

The serving's route on the cluster is read through one walk of an Ingress's rules (:func:`tasks.live.path_entries`).
"""
