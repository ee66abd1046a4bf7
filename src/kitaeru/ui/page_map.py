"""The Map & search page: the scene map, selections that lead to rows and images, and search.

A box or lasso selection becomes a paged table of the selected points (every field, CSV and id
downloads); a single point clicked on the map, or a row picked in a table, opens its full image
and captions with "find similar", which searches with that image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from kitaeru.ui import maps as M
from kitaeru.ui import runs as R
from kitaeru.ui.widgets import one_line, show_image

PAGE_ROWS = 50
MAX_HOVER_THUMBNAILS = 2_000
HIT_COLOUR = "#e4002b"
MAX_CATEGORIES = 20


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
    st.header("Map & search")
    sources = M.find_map_sources(roots)
    if not sources:
        st.info("No map yet: train a multimodal model (its output has scenes_with_umap.json) or write one with "
                "`kitaeru map --embeddings ... --output-json coords.json` into a run folder.")
        return
    labels = [s.name for s in sources]
    pick, paint = st.columns(2)
    with pick:
        source = sources[labels.index(st.selectbox("Map", labels, key="map-source"))]
    try:
        data = _load_map(source.kind, str(source.path), str(source.root), source.path.stat().st_mtime)
    except (ValueError, OSError) as exc:
        st.error(one_line(exc))
        return
    data_dir = M._data_dir(source.path) if source.kind == "multimodal" else None
    image_roots = R.Roots(roots.paths + ([Path(data_dir)] if data_dir else []))
    options = ["(none)"] + list(data.columns)
    default = M.default_colour_column(data)
    with paint:
        colour = st.selectbox("Colour by", options, index=options.index(default) if default in options else 0,
                              key="map-colour")
    hits = search_panel(source, roots, data, image_roots)
    hit_rows = M.hits_to_rows(hits, data)
    fig, trace_rows = map_figure(data, None if colour == "(none)" else colour, hit_rows)
    st.caption(f"{len(data)} points. Click a point to open its image; pick the lasso or box tool (top right of the "
               "map) and drag to list many; double-click to clear.")
    event = st.plotly_chart(fig, width="stretch", key="map-chart", on_select="rerun",
                            selection_mode=("points", "box", "lasso"))
    selected = M.selected_rows(event, trace_rows)
    if len(selected) == 1:
        detail(source, image_roots, data, selected[0], "map")
    elif selected:
        selection_table(image_roots, data, selected, "sel")
    if hits:
        st.subheader("Search hits")
        table = [{k: v for k, v in h.items() if k in ("rank", "score", "scene_id", "id", "description", "path",
                                                        "location", "matched")} for h in hits]
        picked = st.dataframe(table, hide_index=True, width="stretch", key="hits-table", on_select="rerun",
                              selection_mode="single-row")
        rows = picked.selection.rows if picked else []
        if rows and rows[0] < len(hit_rows):
            detail(source, image_roots, data, hit_rows[rows[0]], "hit")
        gallery(image_roots, data, hit_rows[:12])
    with st.expander("Hover thumbnails (interactive HTML view)"):
        if st.toggle("Show the map with image thumbnails on hover", key="hover-html"):
            hover_view(image_roots, data, colour if colour != "(none)" else None)


def map_figure(data: M.MapData, colour: str | None, hit_rows: list[int]):
    """The map: a continuous colour scale for numeric fields, one trace per category otherwise;
    ``trace_rows[curve][point_index]`` is the map row (selection → rows)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    trace_rows: list[list[int]] = []
    size = 9 if len(data) < 2_000 else 4 if len(data) < 30_000 else 2.5
    values = data.columns.get(colour) if colour else None
    hover = "%{text}<extra></extra>"
    if values is not None and M.is_continuous(colour, values):
        rows = [i for i, v in enumerate(values) if v is not None]
        missing = [i for i, v in enumerate(values) if v is None]
        trace_rows.append(rows)
        fig.add_trace(go.Scattergl(
            x=[data.x[i] for i in rows], y=[data.y[i] for i in rows], mode="markers", name=colour,
            text=[f"{data.labels[i]}<br>{colour} = {values[i]}" for i in rows], hovertemplate=hover,
            marker=dict(size=size, opacity=0.85, color=[values[i] for i in rows], colorscale="Viridis",
                        showscale=True, colorbar=dict(title=colour, thickness=14))))
        groups = {"(none)": missing} if missing else {}
    elif values is None:
        groups = {"points": list(range(len(data)))}
    else:
        groups = {}
        for i, v in enumerate(values):
            groups.setdefault("(none)" if v is None else str(v), []).append(i)
        if len(groups) > MAX_CATEGORIES:
            top = sorted(groups, key=lambda k: -len(groups[k]))[:MAX_CATEGORIES - 1]
            rest = [i for k in groups if k not in top for i in groups[k]]
            groups = {k: groups[k] for k in top} | {"(other)": rest}
    for name, rows in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        trace_rows.append(rows)
        fig.add_trace(go.Scattergl(
            x=[data.x[i] for i in rows], y=[data.y[i] for i in rows], mode="markers", name=f"{name} ({len(rows)})",
            text=[data.labels[i] for i in rows], hovertemplate=hover, marker=dict(size=size, opacity=0.8)))
    if hit_rows:
        trace_rows.append(hit_rows)
        fig.add_trace(go.Scattergl(
            x=[data.x[i] for i in hit_rows], y=[data.y[i] for i in hit_rows], mode="markers", name="search hits",
            hovertext=[f"#{n + 1} {data.labels[i]}" for n, i in enumerate(hit_rows)],
            hovertemplate="%{hovertext}<extra>hit</extra>",
            marker=dict(size=size + 10, color=HIT_COLOUR, symbol="star", line=dict(width=1, color="black"))))
        # Rank labels as arrows spread around their points: hits that cluster keep readable labels.
        for (dx, dy), n, i in zip(M.label_offsets(len(hit_rows)), range(len(hit_rows)), hit_rows):
            fig.add_annotation(x=data.x[i], y=data.y[i], text=str(n + 1), ax=dx, ay=dy, showarrow=True, arrowhead=0,
                               arrowwidth=1, arrowcolor=HIT_COLOUR, font=dict(color=HIT_COLOUR, size=12),
                               bgcolor="rgba(255,255,255,0.85)")
    # Zoom as the drag: in plotly's lasso mode a click never reaches Streamlit, and a click must open a point.
    fig.update_layout(height=600, template="plotly_white", dragmode="zoom", legend_title_text=colour or "",
                      legend=dict(itemsizing="constant"),  # readable legend markers however small the points
                      margin=dict(l=10, r=10, t=30, b=10), xaxis_title="UMAP 1", yaxis_title="UMAP 2")
    return fig, trace_rows


def selection_table(roots: R.Roots, data: M.MapData, rows: list[int], key: str) -> None:
    """Every selected point, a page at a time, with downloads; a picked row opens its image."""
    st.subheader(f"Selected: {len(rows)} points")
    records = M.selection_rows(data, rows)
    pages = max(1, -(-len(records) // PAGE_ROWS))
    left, mid, right = st.columns([2, 2, 2])
    page = left.number_input(f"page (of {pages})", 1, pages, 1, key=f"{key}-page") if pages > 1 else 1
    mid.download_button("Download CSV", M.rows_csv(records), file_name="selection.csv", mime="text/csv",
                        key=f"{key}-csv")
    right.download_button("Download ids", "\n".join(str(r["id"]) for r in records) + "\n", file_name="selection-ids.txt",
                          mime="text/plain", key=f"{key}-ids")
    start = (int(page) - 1) * PAGE_ROWS
    shown = records[start:start + PAGE_ROWS]
    picked = st.dataframe(shown, hide_index=True, width="stretch", key=f"{key}-table", on_select="rerun",
                          selection_mode="single-row")
    chosen = picked.selection.rows if picked else []
    if chosen and chosen[0] < len(shown):
        detail(None, roots, data, rows[start + chosen[0]], key)
    else:
        st.caption("Pick a row to open its image and captions.")


def detail(source: M.MapSource | None, roots: R.Roots, data: M.MapData, row: int, key: str) -> None:
    """One point: its full image, every caption and field, and "find similar"."""
    st.subheader(f"Point {data.ids[row]}")
    left, right = st.columns([3, 2])
    with left:
        show_image(roots, data.images[row], data.ids[row])
    with right:
        captions = data.captions[row] if row < len(data.captions) else []
        for caption in captions or [data.labels[row]]:
            st.markdown(f"- {caption}")
        st.json({name: values[row] for name, values in data.columns.items()}, expanded=False)
        if data.images[row] and st.button("Find similar", key=f"similar-{key}-{row}"):
            st.session_state["similar-to"] = data.images[row]
            st.rerun()


def gallery(roots: R.Roots, data: M.MapData, rows: list[int]) -> None:
    cols = st.columns(6)
    for n, row in enumerate(rows):
        with cols[n % 6]:
            show_image(roots, data.images[row], f"#{n + 1} {data.ids[row]}")


def _backend_for(source: M.MapSource, roots: R.Roots) -> tuple[str, str] | None:
    if source.kind == "multimodal":
        return "multimodal", str(source.path)
    indexes = M.find_indexes(roots)
    if not indexes:
        st.caption("Search: no Faiss index under the run folders (build one with `kitaeru index build`).")
        return None
    choice = st.selectbox("Index to search", ["(no search)"] + [str(p) for p in indexes], key="map-index")
    return None if choice == "(no search)" else ("index", choice)


def search_panel(source: M.MapSource, roots: R.Roots, data: M.MapData, image_roots: R.Roots) -> list[dict[str, Any]]:
    """Text and image search through kitaeru serve's backends; returns the hits (best first)."""
    chosen = _backend_for(source, roots)
    if chosen is None:
        return []
    similar = st.session_state.pop("similar-to", None)
    with st.form("search"):
        left, right, target_col, count = st.columns([4, 3, 2, 1])
        text = left.text_input("Text search", key="search-text", placeholder="night, heavy rain, city street")
        upload = right.file_uploader("or an image", type=["jpg", "jpeg", "png", "webp"], key="search-image")
        target = target_col.selectbox("search in", _targets(chosen[0]), key="search-target",
                                      help="Which side of the stored scenes a query is compared with: their "
                                           "images, their captions, or both (the better of the two)")
        top_k = count.number_input("results", 1, 100, 5, key="search-k")
        go_search = left.form_submit_button("Search")
    remembered = st.session_state.get("hits", []) if st.session_state.get("hits-for") == str(source.path) else []
    if not similar and not (go_search and (text.strip() or upload is not None)):
        return remembered
    try:
        backend = _backend(*chosen)
        if similar:
            image = M.open_query_image(image_roots.read_bytes(similar, limit=50_000_000), similar, backend.query_image_size)
            hits = backend.search_image(image, int(top_k), target)
        elif upload is not None:
            hits = backend.search_image(M.open_query_image(upload.getvalue(), upload.name, backend.query_image_size),
                                         int(top_k), target)
        elif not backend.supports_text:
            st.error("this index's model cannot encode text; search with an image")
            return []
        else:
            hits = backend.search_text(text.strip(), int(top_k), target)
    except Exception as exc:  # noqa: BLE001 - a page shows one line, never a traceback
        st.error(f"search failed: {one_line(exc)}")
        return []
    st.session_state["hits"], st.session_state["hits-for"] = hits, str(source.path)
    return hits


def _targets(kind: str) -> list[str]:
    """What a query may be compared with, as ``kitaeru serve`` offers it (the first is its default)."""
    if kind == "multimodal":
        from kitaeru.serve.multimodal_backend import MultimodalBackend

        return list(MultimodalBackend.search_targets)
    from kitaeru.serve.index_backend import IndexBackend

    return list(IndexBackend.search_targets)


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
