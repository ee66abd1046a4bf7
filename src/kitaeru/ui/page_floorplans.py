"""The Floor plans page: a LoRA run's validation images over training, and generation with any
adapter the runs hold (``final/`` or a ``checkpoint-N/``, resolved as ``lora generate`` does)."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from kitaeru.ui import runs as R
from kitaeru.ui.widgets import one_line, show_image


@st.cache_resource(show_spinner="Loading the pipeline and adapter ...", max_entries=2)
def _pipeline(base: str, adapter: str):
    from kitaeru.models.diffusion import load_pipeline

    return load_pipeline(base, lora=adapter, device="auto")


def page_floorplans(roots: R.Roots) -> None:
    st.header("Floor plans")
    runs = [r for r in R.find_runs(roots) if r.recipe == "lora"]
    if not runs:
        st.info("No LoRA run yet (kitaeru lora train).")
        return
    names = [r.name for r in runs]
    with_images = [i for i, r in enumerate(runs) if R.validation_images(r.path)]
    run = runs[names.index(st.selectbox("LoRA run", names, index=with_images[0] if with_images else 0, key="fp-run"))]
    images = R.validation_images(run.path)
    st.subheader("Validation images over training")
    if not images:
        st.info(f"{run.path / 'validation'}: no validation images (train with --validation-every N)")
    by_step: dict[int, list[Path]] = {}
    for step, path in images:
        by_step.setdefault(step, []).append(path)
    for step, paths in by_step.items():
        st.caption(f"epoch {step}")
        cols = st.columns(min(6, len(paths)))
        for n, path in enumerate(paths):
            with cols[n % len(cols)]:
                show_image(roots, path, path.name, width=160)
    generate_form(run, runs)


def generate_form(run: R.RunInfo, runs: list[R.RunInfo]) -> None:
    st.subheader("Generate")
    adapters = R.adapters([run] + [r for r in runs if r is not run])  # the chosen run's adapters first
    if not adapters:
        st.info("No adapter in these runs yet.")
        return
    labels = [a[0] for a in adapters]
    own = [i for i, (label, path) in enumerate(adapters) if path.parent.parent == run.path]
    # A finished run's final adapter; an interrupted one's newest checkpoint.
    default = next((i for i in own if adapters[i][1].name == "final"), own[-1] if own else 0)
    with st.form("generate"):
        label = st.selectbox("Adapter", labels, index=default, key="fp-adapter")
        c1, c2, c3, c4 = st.columns(4)
        width = c1.number_input("grid width (cells)", 1, 50, 4, key="fp-w")
        height = c2.number_input("grid height (cells)", 1, 50, 4, key="fp-h")
        steps = c3.number_input("steps", 1, 200, 30, key="fp-steps")
        seed = c4.number_input("seed", 0, 2**31 - 1, 0, key="fp-seed")
        submitted = st.form_submit_button("Generate")
    if not submitted:
        return
    adapter = dict(adapters)[label]
    try:
        from kitaeru.models.diffusion import base_model_of, generate_floor_plan

        base = base_model_of(adapter) or run.result.get("base_model")
        if not base:
            st.error(f"{adapter}: the adapter records no base pipeline")
            return
        started = time.time()
        result = generate_floor_plan(_pipeline(str(base), str(adapter)), int(width), int(height), steps=int(steps),
                                     seed=int(seed))
        st.image(result[0]["image"], caption=f"{label} · {width}×{height} cells · {time.time() - started:.1f} s",
                 width=min(512, result[0]["image"].width * 4))
    except Exception as exc:  # noqa: BLE001 - one line in the page
        st.error(f"generation failed: {one_line(exc)}")
