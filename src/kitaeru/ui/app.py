"""The kitaeru dashboard (``streamlit run`` executes this file; ``kitaeru ui`` starts it).

The run folders come from ``KITAERU_UI_RUNS`` (paths joined by ``os.pathsep``). The page is chosen in
the sidebar or with ``?page=runs|training|map|floorplans``. Every page catches its own errors and
shows them as one line: a corrupt file never becomes a stack trace in the browser.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import streamlit as st

from kitaeru.ui import jobs as J
from kitaeru.ui import maps as M
from kitaeru.ui import runs as R

PAGES = {"runs": "Runs", "training": "Training", "map": "Map & search", "floorplans": "Floor plans"}
MAX_GALLERY = 24
MAX_HOVER_THUMBNAILS = 2_000
HIT_COLOUR = "#e4002b"


# ---- helpers -----------------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, (ValueError, OSError)) else text or type(exc).__name__


def _show_image(roots: R.Roots, path: str | Path | None, caption: str = "", width: int | None = None) -> None:
    data = M.image_bytes(roots, str(path) if path else None)
    if data is None:
        st.caption(f"{caption} (image not available)")
        return
    if width:
        st.image(data, caption=caption, width=width)
    else:
        st.image(data, caption=caption, width="stretch")


# ---- Runs --------------------------------------------------------------------------------------
def page_runs(roots: R.Roots) -> None:
    st.header("Runs")
    st.caption("Every kitaeru run under: " + ", ".join(str(p) for p in roots.paths))
    runs = R.find_runs(roots)
    if not runs:
        st.info("No runs yet (no training_result.json under the run folders).")
        return
    live = any(r.status == "running" for r in runs)

    @st.fragment(run_every=5 if live else None)
    def table() -> None:
        rows = [r.row() for r in R.find_runs(roots)]
        st.dataframe(rows, width="stretch", hide_index=True, key="runs-table")
        if live:
            st.caption("A run is going: this table refreshes every 5 s.")

    table()
    names = [r.name for r in runs]
    chosen = st.selectbox("Run", names, key="run-choice")
    run = runs[names.index(chosen)]
    show_run(roots, run)


def show_run(roots: R.Roots, run: R.RunInfo) -> None:
    st.subheader(f"{run.recipe} · {run.name}")
    if run.error:
        st.error(run.error)
        return
    result = run.result
    cols = st.columns(4)
    cols[0].metric("status", run.status)
    cols[1].metric("epochs", run.epochs or "–")
    metric = run.key_metric
    cols[2].metric(metric[0] if metric else "key metric", f"{metric[1]:.4g}" if metric else "–")
    duration = run.duration_seconds
    cols[3].metric("duration", f"{duration:.0f} s" if duration is not None else "–")
    if run.status == "died":
        st.warning(f"The process (pid {result.get('pid')}) is gone but the run never ended: it was killed. "
                   f"Resume with: {result.get('resume_command', '')}")
    if result.get("error"):
        st.error(f"error: {result['error']}")
    if result.get("resume_command") and run.status in ("interrupted", "failed", "died"):
        st.code(result["resume_command"], language="bash")
    png = run.path / "results.png"
    tabs = st.tabs(["Config", "Resources", "OOM recoveries", "Skipped inputs", "Files", "Result JSON"])
    with tabs[0]:
        config = run.path / "config.yaml"
        if config.is_file():
            try:
                st.code(config.read_text(encoding="utf-8"), language="yaml")
            except (OSError, UnicodeDecodeError) as exc:
                st.warning(f"{config}: cannot be read ({_one_line(exc)})")
        else:
            st.info(f"{config}: no resolved config in this run folder")
    with tabs[1]:
        plan = R.resource_plan(result)
        st.json(plan) if plan else st.info("No resource plan recorded.")
    with tabs[2]:
        ooms = R.oom_recoveries(result)
        st.dataframe(ooms, width="stretch") if ooms else st.success("No out-of-memory recovery was needed.")
    with tabs[3]:
        skipped = R.skipped_inputs(result)
        st.dataframe(skipped, width="stretch") if skipped else st.success("No input was skipped.")
    with tabs[4]:
        st.dataframe(R.run_files(run.path), width="stretch", hide_index=True)
    with tabs[5]:
        st.json({k: v for k, v in result.items() if k != "library_versions"}, expanded=False)
    if png.is_file():
        _show_image(roots, png, "results.png")


# ---- Training ----------------------------------------------------------------------------------
def page_training(roots: R.Roots) -> None:
    st.header("Training")
    runs = [r for r in R.find_runs(roots) if (r.path / "results.csv").exists()]
    if runs:
        curves(runs)
    else:
        st.info("No run with a results.csv yet.")
    st.divider()
    start_form(roots)
    st.divider()
    job_list(roots)


def curves(runs: list[R.RunInfo]) -> None:
    import plotly.graph_objects as go

    from kitaeru.core.plots import curve_columns, x_column

    names = [r.name for r in runs]
    chosen = st.multiselect("Runs to compare", names, default=names[:1], key="curve-runs")
    tables = {}
    for name in chosen:
        run = runs[names.index(name)]
        columns, rows, problem = R.read_curves(run.path)
        if problem:
            st.warning(problem)
            continue
        tables[name] = (columns, rows)
    if not tables:
        return
    metrics = list(dict.fromkeys(c for cols, rows in tables.values() for c in curve_columns(cols, rows)))
    shown = st.multiselect("Curves", metrics, default=metrics[:8], key="curve-metrics")
    grid = st.columns(2)
    for i, metric in enumerate(shown):
        fig = go.Figure()
        for name, (columns, rows) in tables.items():
            x_name = x_column(columns)
            pts = [((r.get(x_name) if x_name else n + 1), r.get(metric)) for n, r in enumerate(rows)]
            pts = [p for p in pts if p[0] is not None and p[1] is not None]
            if pts:
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name))
        fig.update_layout(title=metric, height=280, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white",
                          xaxis_title="epoch", showlegend=len(tables) > 1)
        with grid[i % 2]:
            st.plotly_chart(fig, width="stretch", key=f"curve-{metric}")


def start_form(roots: R.Roots) -> None:
    st.subheader("Start a training")
    recipe = st.selectbox("Recipe", list(J.MAIN_OPTIONS), key="start-recipe")
    with st.form("start-training"):
        values: dict[str, Any] = {}
        for flag, label, kind, default in J.MAIN_OPTIONS[recipe]:
            if kind == "int":
                values[flag] = st.number_input(label, value=int(default), min_value=0, step=1, key=f"opt-{recipe}{flag}")
            else:
                values[flag] = st.text_input(label, value=str(default), key=f"opt-{recipe}{flag}")
        default_out = str(roots.paths[0] / recipe) if roots.paths else f"runs/{recipe}"
        output_dir = st.text_input("output folder", value=default_out, key=f"opt-{recipe}-out")
        extra = st.text_input("more options (as on the command line, e.g. --seed 3 key=value)", key=f"opt-{recipe}-extra")
        submitted = st.form_submit_button("Start")
    if submitted:
        try:
            roots.resolve(output_dir)
        except R.OutsideRoots:
            st.error(f"{output_dir}: choose an output folder inside the run folders this dashboard watches")
            return
        try:
            command = J.training_command(recipe, values, output_dir, extra)
        except ValueError as exc:
            st.error(_one_line(exc))
            return
        job = J.start_job(recipe, command, roots.paths[0], output_dir)
        st.success(f"started (pid {job.pid}): {job.display_command}")


def job_list(roots: R.Roots) -> None:
    if not roots.paths:
        return
    jobs = J.list_jobs(roots.paths[0])
    if not jobs:
        return
    st.subheader("Started from this dashboard")
    live = any(j.returncode is None for j in jobs)

    @st.fragment(run_every=2 if live else None)
    def panel() -> None:
        for job in J.list_jobs(roots.paths[0])[:5]:
            state = "running" if job.returncode is None else f"exit {job.returncode}"
            with st.expander(f"{job.recipe} · {job.id} · {state}", expanded=job.returncode is None):
                st.code(job.display_command, language="bash")
                st.code(J.log_tail(job) or "(no output yet)", language="text")
                if job.returncode is None and st.button("Stop (Ctrl-C: resumable)", key=f"stop-{job.id}"):
                    J.stop_job(job)
                    code = J.wait(job, 30)
                    st.info(f"stopped: exit {code}" if code is not None else "stop sent; the run is finishing its step")

    panel()


# ---- Map & search ------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=8)
def _load_map(kind: str, path: str, root: str, mtime: float) -> M.MapData:  # noqa: ARG001 - mtime keys the cache
    return M.load_map(M.MapSource(kind, Path(path), Path(root)))


@st.cache_resource(show_spinner="Loading the search models ...", max_entries=2)
def _backend(kind: str, path: str):
    from kitaeru.serve.loading import load_backend

    if kind == "multimodal":
        return load_backend(output_dir=path, device="cpu")
    return load_backend(index=path, device="cpu")


def page_map(roots: R.Roots) -> None:
    import plotly.graph_objects as go

    st.header("Map & search")
    sources = M.find_map_sources(roots)
    if not sources:
        st.info("No map yet: train a multimodal model (its output has scenes_with_umap.json) or write one with "
                "`kitaeru map --embeddings ... --json-out coords.json` into a run folder.")
        return
    labels = [s.name for s in sources]
    pick, paint = st.columns(2)
    with pick:
        source = sources[labels.index(st.selectbox("Map", labels, key="map-source"))]
    try:
        data = _load_map(source.kind, str(source.path), str(source.root), source.path.stat().st_mtime)
    except (ValueError, OSError) as exc:
        st.error(_one_line(exc))
        return
    image_roots = R.Roots(roots.paths + ([Path(M._data_dir(source.path))] if source.kind == "multimodal"
                                         and M._data_dir(source.path) else []))
    columns = list(data.columns)
    default = M.default_colour_column(data)
    options = ["(none)"] + columns
    with paint:
        colour = st.selectbox("Colour by", options, index=options.index(default) if default in options else 0,
                              key="map-colour")
    hits = search_panel(source, roots, data)
    hit_rows = M.hits_to_rows(hits, data)

    # One trace per category: trace_rows[curve][point_index] is the map row (selection → rows).
    fig = go.Figure()
    trace_rows: list[list[int]] = []
    size = 9 if len(data) < 2_000 else 4 if len(data) < 30_000 else 2.5
    values = data.columns.get(colour) if colour != "(none)" else None
    groups: dict[str, list[int]] = {}
    if values is None:
        groups["points"] = list(range(len(data)))
    else:
        for i, v in enumerate(values):
            groups.setdefault("(none)" if v is None else str(v), []).append(i)
        if len(groups) > 20:
            top = sorted(groups, key=lambda k: -len(groups[k]))[:19]
            rest = [i for k in groups if k not in top for i in groups[k]]
            groups = {k: groups[k] for k in top} | {"(other)": rest}
    for name, rows in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        trace_rows.append(rows)
        fig.add_trace(go.Scattergl(
            x=[data.x[i] for i in rows], y=[data.y[i] for i in rows], mode="markers", name=f"{name} ({len(rows)})",
            text=[data.labels[i] for i in rows], hovertemplate="%{text}<extra></extra>", marker=dict(size=size, opacity=0.8),
        ))
    if hit_rows:
        fig.add_trace(go.Scattergl(
            x=[data.x[i] for i in hit_rows], y=[data.y[i] for i in hit_rows], mode="markers+text", name="search hits",
            text=[str(n + 1) for n in range(len(hit_rows))], textposition="top center",
            hovertext=[data.labels[i] for i in hit_rows], hovertemplate="%{hovertext}<extra>hit</extra>",
            marker=dict(size=size + 10, color=HIT_COLOUR, symbol="star", line=dict(width=1, color="black")),
        ))
    fig.update_layout(height=600, template="plotly_white", dragmode="lasso", legend_title_text=colour,
                      margin=dict(l=10, r=10, t=30, b=10), xaxis_title="UMAP 1", yaxis_title="UMAP 2")
    st.caption(f"{len(data)} points. Drag a lasso or a box to see the images of the selected points.")
    event = st.plotly_chart(fig, width="stretch", key="map-chart", on_select="rerun",
                            selection_mode=("points", "box", "lasso"))
    selected = M.selected_rows(event, trace_rows)
    if selected:
        st.subheader(f"Selected: {len(selected)} points")
        gallery(image_roots, data, selected[:MAX_GALLERY])
        if len(selected) > MAX_GALLERY:
            st.caption(f"showing the first {MAX_GALLERY}")
    if hits:
        st.subheader("Search hits")
        st.dataframe([{k: v for k, v in h.items() if k in ("rank", "score", "scene_id", "id", "description", "path",
                                                            "location", "matched")} for h in hits],
                     hide_index=True, width="stretch", key="hits-table")
        gallery(image_roots, data, hit_rows[:MAX_GALLERY])
    with st.expander("Hover thumbnails (interactive HTML view)"):
        if st.toggle("Show the map with image thumbnails on hover", key="hover-html"):
            hover_view(image_roots, data, colour if colour != "(none)" else None)


def gallery(roots: R.Roots, data: M.MapData, rows: list[int]) -> None:
    cols = st.columns(6)
    for n, row in enumerate(rows):
        with cols[n % 6]:
            _show_image(roots, data.images[row], data.labels[row][:80])


def search_panel(source: M.MapSource, roots: R.Roots, data: M.MapData) -> list[dict[str, Any]]:
    """Text and image search through kitaeru serve's backends; returns the hits (best first)."""
    backend_kind, backend_path = ("multimodal", str(source.path)) if source.kind == "multimodal" else (None, None)
    if source.kind != "multimodal":
        indexes = M.find_indexes(roots)
        if not indexes:
            st.caption("Search: no Faiss index under the run folders (build one with `kitaeru index build`).")
            return []
        choice = st.selectbox("Index to search", ["(no search)"] + [str(p) for p in indexes], key="map-index")
        if choice == "(no search)":
            return []
        backend_kind, backend_path = "index", choice
    with st.form("search"):
        left, right, count = st.columns([4, 3, 1])
        text = left.text_input("Text search", key="search-text", placeholder="night, heavy rain, city street")
        upload = right.file_uploader("or an image", type=["jpg", "jpeg", "png", "webp"], key="search-image")
        top_k = count.number_input("results", 1, 100, 5, key="search-k")
        go_search = left.form_submit_button("Search")
    if not go_search or not (text.strip() or upload is not None):
        return st.session_state.get("hits", []) if st.session_state.get("hits-for") == str(source.path) else []
    try:
        backend = _backend(backend_kind, backend_path)
        target = backend.search_targets[0]
        if upload is not None:
            from PIL import Image

            image = Image.open(io.BytesIO(upload.getvalue())).convert("RGB")
            hits = backend.search_image(image, int(top_k), target)
        else:
            if not backend.supports_text:
                st.error("this index's model cannot encode text; search with an image")
                return []
            hits = backend.search_text(text.strip(), int(top_k), target)
    except Exception as exc:  # noqa: BLE001 - a page shows one line, never a traceback
        st.error(f"search failed: {_one_line(exc)}")
        return []
    st.session_state["hits"], st.session_state["hits-for"] = hits, str(source.path)
    return hits


def hover_view(roots: R.Roots, data: M.MapData, colour: str | None) -> None:
    import tempfile

    import numpy as np
    import streamlit.components.v1 as components

    from kitaeru.viz.map_figures import colouring, hover_texts, write_html
    from kitaeru.viz.thumbnails import thumbnail_data_uri

    rows = set(M.sample_indices(len(data), MAX_HOVER_THUMBNAILS))
    thumbs = []
    for i, path in enumerate(data.images):
        ok = i in rows and M.image_bytes(roots, path) is not None
        thumbs.append(thumbnail_data_uri(path, 64) if ok else None)
    coords = np.column_stack([data.x, data.y])
    colours = colouring(colour, data.columns.get(colour) if colour else None, len(data))
    texts = hover_texts(data.labels, data.columns, [colour] if colour else [])
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "map.html"
        write_html(str(target), coords, colours, texts, thumbs, "map", plotly_js="inline")
        components.html(target.read_text(encoding="utf-8"), height=650, scrolling=False)
    if len(data) > MAX_HOVER_THUMBNAILS:
        st.caption(f"thumbnails for a random {MAX_HOVER_THUMBNAILS} of {len(data)} points")


# ---- Floor plans -------------------------------------------------------------------------------
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
                _show_image(roots, path, path.name, width=160)
    st.subheader("Generate")
    adapters = R.adapters([run] + [r for r in runs if r is not run])  # the chosen run's adapters first
    if not adapters:
        st.info("No adapter in these runs yet.")
        return
    with st.form("generate"):
        label = st.selectbox("Adapter", [a[0] for a in adapters], key="fp-adapter")
        c1, c2, c3, c4 = st.columns(4)
        width = c1.number_input("grid width (cells)", 1, 50, 4, key="fp-w")
        height = c2.number_input("grid height (cells)", 1, 50, 4, key="fp-h")
        steps = c3.number_input("steps", 1, 200, 30, key="fp-steps")
        seed = c4.number_input("seed", 0, 2**31 - 1, 0, key="fp-seed")
        submitted = st.form_submit_button("Generate")
    if submitted:
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
            st.image(result[0]["image"], caption=f"{width}×{height} cells · {time.time() - started:.1f} s",
                     width=min(512, result[0]["image"].width * 4))
        except Exception as exc:  # noqa: BLE001 - one line in the page
            st.error(f"generation failed: {_one_line(exc)}")


# ---- the app -----------------------------------------------------------------------------------
RENDER = {"runs": page_runs, "training": page_training, "map": page_map, "floorplans": page_floorplans}


def main() -> None:
    st.set_page_config(page_title="kitaeru", page_icon="🔨", layout="wide")
    roots = R.Roots.from_env()
    keys = list(PAGES)
    wanted = st.query_params.get("page", "runs")
    if "page" not in st.session_state:
        st.session_state["page"] = wanted if wanted in PAGES else "runs"
    st.sidebar.title("kitaeru")
    page = st.sidebar.radio("Page", keys, format_func=PAGES.get, key="page")
    st.query_params["page"] = page
    st.sidebar.caption("Run folders:\n\n" + "\n\n".join(f"`{p}`" for p in roots.paths))
    try:
        RENDER[page](roots)
    except Exception as exc:  # noqa: BLE001 - the browser gets one line, the console the rest
        import traceback

        traceback.print_exc()
        st.error(f"{PAGES[page]}: {_one_line(exc)}")


main()
