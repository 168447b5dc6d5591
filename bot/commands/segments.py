"""`/segments [rfm|clusters|tiers] [STATE|REGION]`: who the customers are, by behaviour."""

from __future__ import annotations

from analytics import charts
from analytics.segments import cluster_report, segment_report
from bot.answers import Answer, Chart, Figure, fmt_int, fmt_money, fmt_pct
from bot.commands.args import one_of, parse_args
from bot.commands.common import base_answer, empty_note, subtitle, table
from bot.router import Command, CommandContext

VIEWS = {"rfm": "rfm", "segment": "rfm", "segments": "rfm",
         "clusters": "clusters", "cluster": "clusters", "kmeans": "clusters",
         "tiers": "clusters", "tier": "clusters"}


def handle(ctx: CommandContext, args: list[str]) -> Answer:
    parsed = parse_args(args)
    view = VIEWS[one_of(parsed, tuple(VIEWS), "rfm")]
    place = ctx.place(parsed.rest_text)
    if view == "clusters":
        return _clusters(ctx, place)
    base = base_answer(ctx, "/segments", "RFM segments", place)
    rep = segment_report(ctx.engine, base["as_of"], place)
    if rep.customers == 0:
        return empty_note(base, "customers")
    cur = ctx.settings.currency
    seg = rep.segments
    present = seg[seg["customers"] > 0]
    top = present.sort_values("revenue", ascending=False).iloc[0]
    figures = [
        Figure("Customers", fmt_int(rep.customers), rep.customers),
        Figure("Revenue", fmt_money(rep.revenue, cur), rep.revenue),
        Figure("Segments with customers", fmt_int(len(present)), len(present)),
        Figure("Biggest revenue segment", f"{top['segment']} ({fmt_pct(top['revenue_share'])} of revenue)",
               top["segment"]),
    ]
    for name in ("Champions", "At Risk", "Can't Lose Them"):
        row = seg[seg["segment"] == name]
        if len(row):
            n = int(row["customers"].iloc[0])
            figures.append(Figure(name, f"{fmt_int(n)} ({fmt_pct(row['share'].iloc[0])})", n))
    chart = charts.bar_chart(seg.set_index("segment")["customers"], "Customers by RFM segment",
                             subtitle(rep.as_of, place.label), sort=False,
                             highlight=["Champions", "Loyal", "At Risk", "Can't Lose Them"], max_bars=11)
    notes = ["Scores 1–5 by quintiles with ties kept together; segments from the R×F grid. "
             "Scores are computed once over the whole base; a place filter only chooses who is counted."]
    if rep.fallbacks:
        notes.append("Fallback used: " + "; ".join(f.rstrip(".") for f in rep.fallbacks) + ".")
    return Answer(
        **base, figures=figures, notes=notes,
        charts=[Chart("segments-rfm", "Customers by RFM segment", chart)],
        tables=[
            table("Segments", seg, ["segment", "customers", "share", "revenue", "revenue_share",
                                    "recency", "frequency", "monetary"],
                  rename={"revenue_share": "rev. share", "recency": "mean R (days)",
                          "frequency": "mean F", "monetary": "mean M"},
                  ints=["customers", "recency"], pct=["share", "revenue_share"],
                  money=["revenue", "monetary"], nums=["frequency"]),
            table("What to do", present, ["segment", "action"]),
        ],
    )


def _clusters(ctx: CommandContext, place) -> Answer:  # noqa: ANN001 - Place
    base = base_answer(ctx, "/segments clusters", "Behaviour clusters and value tiers", place)
    rep = cluster_report(ctx.engine, base["as_of"], place)
    if rep.customers == 0:
        return empty_note(base, "customers")
    cur = ctx.settings.currency
    sel = rep.selection
    figures = [Figure("Customers", fmt_int(rep.customers), rep.customers),
               Figure("Clusters (k by silhouette)", str(rep.k), rep.k),
               Figure("Elbow knee", str(rep.knee_k) if rep.knee_k else "–", rep.knee_k)]
    if len(sel):
        best = sel.set_index("k")
        if rep.k in best.index:
            figures.append(Figure("Silhouette / Davies-Bouldin at k",
                                  f"{best.loc[rep.k, 'silhouette']:.3f} / {best.loc[rep.k, 'davies_bouldin']:.3f}",
                                  float(best.loc[rep.k, "silhouette"])))
    for _, row in rep.tiers.iterrows():
        figures.append(Figure(f"{row['tier']}-value tier", f"{fmt_int(row['customers'])} customers, "
                              f"{fmt_pct(row['revenue_share'])} of revenue", int(row["customers"])))
    sub = subtitle(rep.as_of, place.label)
    chart_list = []
    if len(rep.projection):
        chart_list.append(Chart("segments-clusters-pca", "Clusters (PCA)", charts.scatter_chart(
            rep.projection, "x", "y", "Behaviour clusters (PCA of the scaled features)",
            sub + (" · whole base" if not place.is_all else ""), hue="name",
            x_label="PC 1", y_label="PC 2")))
    chart_list.append(Chart("segments-tiers", "Value tiers", charts.bar_chart(
        rep.tiers.set_index("tier")["revenue"], "Revenue by value tier", sub, value_format="money",
        currency=cur, sort=False)))
    tables = [
        table("Clusters", rep.clusters, ["name", "customers", "share", "revenue_share", "recency",
                                         "frequency", "monetary"],
              rename={"revenue_share": "rev. share", "recency": "mean R (days)", "frequency": "mean F",
                      "monetary": "mean M"},
              ints=["customers", "recency"], pct=["share", "revenue_share"], nums=["frequency"],
              money=["monetary"]),
    ]
    if len(sel):
        tables.append(table("Choosing k", sel, ["k", "silhouette", "davies_bouldin", "inertia"],
                            rename={"davies_bouldin": "Davies-Bouldin"},
                            nums=["silhouette", "davies_bouldin"], ints=["inertia"],
                            note="k is the best silhouette; lower Davies-Bouldin is better; "
                                 "the knee of the inertia curve is shown for comparison."))
    features = ", ".join(rep.features_used)
    return Answer(**base, figures=figures, tables=tables, charts=chart_list,
                  notes=[f"K-Means on log-scaled, standardised features: {features}. "
                         "Tiers: 1-D K-Means on R, F and M, levels summed into Low/Mid/High."])


COMMAND = Command(
    name="segments",
    usage="/segments [rfm|clusters] [STATE|REGION]",
    summary="RFM segments with recommended actions, or behaviour clusters and value tiers.",
    examples=("/segments", "/segments clusters", "/segments rfm SP"),
    handler=handle,
    cacheable=True,
    aliases=("segment", "rfm", "clusters"),
)
