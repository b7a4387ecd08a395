"""Tools run by hand, not DVC stages: the inference CLI, the development-set recipe, the scaling study, the
README's results table. Each runs as `python -m stages.tools.<name>`."""
