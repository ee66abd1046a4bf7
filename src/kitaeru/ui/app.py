"""The kitaeru dashboard (``streamlit run`` executes this file; ``kitaeru ui`` starts it).

The run folders come from ``KITAERU_UI_RUNS`` (paths joined by ``os.pathsep``). The page is chosen in
the sidebar or with ``?page=runs|training|map|floorplans``. Every page catches its own errors and
shows them as one line: a corrupt file never becomes a stack trace in the browser. The Runs page
lives here; the others in ``page_*.py``.
"""

from __future__ import annotations

import streamlit as st

from kitaeru.ui import curves as C
from kitaeru.ui import runs as R
from kitaeru.ui.page_floorplans import page_floorplans
from kitaeru.ui.page_map import page_map
from kitaeru.ui.page_training import page_training
from kitaeru.ui.widgets import curve_grid, metrics_of, one_line, show_image

PAGES = {"runs": "Runs", "training": "Training", "map": "Map & search", "floorplans": "Floor plans"}


def page_runs(roots: R.Roots) -> None:
    st.header("Runs")
    st.caption("Every kitaeru run under: " + ", ".join(R.display_path(p, roots.paths) for p in roots.paths))
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
    show_run(roots, run=runs[names.index(chosen)], runs=runs)


def show_run(roots: R.Roots, run: R.RunInfo, runs: list[R.RunInfo]) -> None:
    st.subheader(f"{run.recipe} · {run.name}", help=str(run.path))
    if run.error:
        st.error(run.error)
        return
    result = run.result
    cols = st.columns(4)
    cols[0].metric("status", run.status)
    cols[1].metric("epochs", run.epochs or "–")
    metric = run.key_metric
    cols[2].metric(metric[0] if metric else "key metric", f"{metric[1]:.4g}" if metric else "–")
    cols[3].metric("duration", run.duration)
    if run.status == "died":
        st.warning(f"The process (pid {result.get('pid')}) is gone but the run never ended: it was killed.")
    if result.get("error"):
        st.error(f"error: {result['error']}")
    if result.get("resume_command") and run.status in ("interrupted", "failed", "died"):
        st.caption("Resume with:")
        st.code(result["resume_command"], language="bash")
    tracking_links(run)
    tabs = st.tabs(["Curves", "Config", "Compare config", "Resources", "OOM recoveries", "Skipped inputs", "Files",
                    "Result JSON"])
    with tabs[0]:
        columns, rows, problem = R.read_curves(run.path)
        if problem:
            st.info(problem)
        else:
            curve_grid({run.name: (columns, rows)}, metrics_of({run.name: (columns, rows)}), C.colours([run.name]),
                       key="run-curve", columns=3)
    with tabs[1]:
        config = run.path / "config.yaml"
        if config.is_file():
            try:
                st.code(config.read_text(encoding="utf-8"), language="yaml")
            except (OSError, UnicodeDecodeError) as exc:
                st.warning(f"{config}: cannot be read ({one_line(exc)})")
        else:
            st.info(f"{config}: no resolved config in this run folder")
    with tabs[2]:
        compare_config(run, [r for r in runs if r is not run and r.recipe == run.recipe])
    with tabs[3]:
        plan = R.resource_plan(result)
        st.json(plan) if plan else st.info("No resource plan recorded.")
    with tabs[4]:
        ooms = R.oom_recoveries(result)
        st.dataframe(ooms, width="stretch") if ooms else st.success("No out-of-memory recovery was needed.")
    with tabs[5]:
        skipped = R.skipped_inputs(result)
        st.dataframe(skipped, width="stretch") if skipped else st.success("No input was skipped.")
    with tabs[6]:
        st.dataframe(R.run_files(run.path), width="stretch", hide_index=True)
    with tabs[7]:
        st.json({k: v for k, v in result.items() if k != "library_versions"}, expanded=False)
    if (run.path / "results.png").is_file():
        show_image(roots, run.path / "results.png", "results.png")


def tracking_links(run: R.RunInfo) -> None:
    """Links to the experiment-tracker runs (MLflow, W&B, ...) this run was also logged to."""
    entries = run.tracking
    if not entries:
        return
    lines = []
    for entry in entries:
        name = f"{entry.get('backend', 'tracker')}" + (f" · {entry['experiment']}" if entry.get("experiment") else "")
        run_id = entry.get("run_id", "")
        if entry.get("error"):
            lines.append(f"- {name}: not logged ({entry['error']})")
        elif entry.get("url", "").startswith(("http://", "https://")):
            lines.append(f"- [{name} · run {run_id}]({entry['url']})")
        else:
            lines.append(f"- {name} · run {run_id}" + (f" · `{entry['url']}`" if entry.get("url") else ""))
    st.markdown("**Tracked in:**\n" + "\n".join(lines))


def compare_config(run: R.RunInfo, others: list[R.RunInfo]) -> None:
    if not others:
        st.info(f"No other {run.recipe} run to compare with.")
        return
    names = [r.name for r in others]
    other = others[names.index(st.selectbox("Compare with", names, key="compare-with"))]
    mine, problem_a = C.read_config(run.path)
    theirs, problem_b = C.read_config(other.path)
    if problem_a or problem_b:
        st.warning(problem_a or problem_b)
        return
    rows = C.config_diff(mine, theirs)
    for row in rows:
        row[run.name], row[other.name] = row.pop("A"), row.pop("B")
    st.dataframe(rows, hide_index=True, width="stretch") if rows else st.success("Same resolved config.")


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
    st.sidebar.caption("Run folders:\n\n" + "\n\n".join(f"`{R.display_path(p, roots.paths)}`" for p in roots.paths),
                       help="\n\n".join(str(p) for p in roots.paths))
    try:
        RENDER[page](roots)
    except Exception as exc:  # noqa: BLE001 - the browser gets one line, the console the rest
        import traceback

        traceback.print_exc()
        st.error(f"{PAGES[page]}: {one_line(exc)}")


main()
