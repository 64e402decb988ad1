"""Fine-tuning: start a training run from another model's weights (config key ``init_from``).

The new model has the source's architecture (:func:`etgnn.config.source_architecture`).  What is
copied from the source:

- the backbone, whole, with its neighbour-count normalisation; embedding rows of elements the
  source never saw keep their fresh initialisation ("new elements get new rows");
- the head of every target whose name and form (level, rank, symmetry, sum rule, expansion
  terms, reduction) equal the source's, with its normalisation (scale and per-element shifts; a
  shift for an element the source never saw comes from the new training data).

Every other target keeps the new, untrained head built from the new data's statistics.  Before
any step, a fine-tuned model therefore predicts exactly what the source predicts for every
loaded target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["InitReport", "init_from_source", "backbone_param_groups", "HEAD_FORM_KEYS"]

#: target settings that fix a head's function: a head is loaded only where all of them agree
HEAD_FORM_KEYS = ("level", "rank", "reduce", "symmetry", "sum_rule", "isotropic", "two_body", "three_body",
                  "mixed", "chiral", "four_body", "gradient_of")


@dataclass
class InitReport:
    """What :func:`init_from_source` did: loaded heads, new heads (with the reason), new elements."""

    loaded_heads: list[str] = field(default_factory=list)
    new_heads: dict[str, str] = field(default_factory=dict)
    new_elements: list[int] = field(default_factory=list)

    def lines(self, source: str) -> list[str]:
        """Human-readable summary, one line each, for the training log."""
        from ase.data import chemical_symbols

        out = [f"init_from {source}: backbone loaded"
               + (f"; heads loaded: {', '.join(self.loaded_heads)}" if self.loaded_heads else "; no head loaded")]
        out += [f"init_from {source}: new head for {name} ({why})" for name, why in self.new_heads.items()]
        if self.new_elements:
            out.append(f"init_from {source}: new embedding rows for elements the source never saw: "
                       + ", ".join(chemical_symbols[z] for z in self.new_elements))
        return out


def _form(target_config) -> tuple:
    return tuple(getattr(target_config, k) for k in HEAD_FORM_KEYS)


def init_from_source(model, source, train_elements=()) -> InitReport:
    """Copy ``source``'s backbone and matching heads into ``model`` (both :class:`etgnn.model.ETGNN`).

    Args:
        model: the new model, built with the source's architecture and the new data's statistics.
        source: the model to start from.
        train_elements: atomic numbers in the new training data (to name the new elements).

    Returns:
        an :class:`InitReport`.
    """
    report = InitReport()
    seen = source.elements_seen.clone()
    new = model.state_dict()
    src = source.state_dict()
    fresh_rows = ~seen
    for key, value in src.items():
        if not key.startswith("backbone."):
            continue
        if key.endswith("emb.weight") and value.shape == new[key].shape and value.dim() == 2:
            merged = value.clone()
            merged[fresh_rows] = new[key][fresh_rows].to(merged.dtype)  # new elements: fresh rows
            new[key] = merged
        else:
            new[key] = value
    for name, target in model.targets.items():
        other = source.targets.get(name)
        if other is None:
            report.new_heads[name] = "not a target of the source"
            continue
        if _form(target.config) != _form(other.config):
            diff = [k for k in HEAD_FORM_KEYS if getattr(target.config, k) != getattr(other.config, k)]
            report.new_heads[name] = f"the source's differs in {', '.join(diff)}"
            continue
        prefix = f"heads.{name}."
        for key, value in src.items():
            if not key.startswith(prefix):
                continue
            if key.endswith("normalizer.element_shift"):  # elements new to the source: the new data's shift
                merged = value.clone()
                merged[fresh_rows] = new[key][fresh_rows].to(merged.dtype)
                new[key] = merged
            else:
                new[key] = value
        report.loaded_heads.append(name)
    new["elements_seen"] = seen | model.elements_seen
    model.load_state_dict(new)
    report.new_elements = sorted(int(z) for z in set(train_elements) if not bool(seen[int(z)]))
    return report


def backbone_param_groups(model, lr: float, freeze: bool, factor: float) -> list[dict]:
    """AdamW parameter groups: the backbone at ``lr * factor`` (or frozen), the heads at ``lr``.

    Each group carries ``lr_scale`` (the factor of the schedule's rate it takes).  A frozen
    backbone's parameters get ``requires_grad = False`` and are left out.
    """
    backbone = list(model.backbone.parameters())
    ids = {id(p) for p in backbone}
    heads = [p for p in model.parameters() if id(p) not in ids]
    if freeze:
        for p in backbone:
            p.requires_grad_(False)
        return [{"params": heads, "lr": lr, "lr_scale": 1.0}]
    return [{"params": backbone, "lr": lr * factor, "lr_scale": factor},
            {"params": heads, "lr": lr, "lr_scale": 1.0}]

