"""Assembling a simulated survey: stars, sky fields, plates and visits, extinction and RVs, the
systematics amplitudes, the DR16-like star table and the paper's cuts (:func:`generate_survey`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..constants import ALLSTAR_ELEMENTS, SPECIES, abundance_column
from ..progress import ProgressArg, Reporter, reporter
from ..selection import bundle_order, finalise_clusters, select_stars
from .config import DEFAULT_N_FIELD, SimulationConfig
from .instrument import instrument_templates
from .labels import f32
from .spectra import Observation, SimulatedSurvey
from .stars import StarDrawer, apogee_ids, concat_blocks

#: Columns of the OCCAM member table made from a survey's candidates.
MEMBER_COLUMNS = ("APOGEE_ID", "CLUSTER", "CG_PROB", "RV_PROB", "FEH_PROB", "PM_PROB")


def generate_survey(
    config: SimulationConfig | None = None,
    n_field: int = DEFAULT_N_FIELD,
    seed: int = 0,
    progress: ProgressArg | Reporter = False,
) -> SimulatedSurvey:
    """Draw a survey's star table (all stars, passing or failing the paper's cuts).

    Parameters
    ----------
    config : SimulationConfig, optional
        The survey's physics and shape (default: the paper's).
    n_field : int
        Number of *field* stars of the final bundle (after the cuts); the clusters follow
        ``config.cluster_sizes``.
    seed : int
        Random seed: the same seed and config give the same survey, bit for bit.
    progress : bool or callable
        Phases reported to a callable ``progress(fraction, text)`` (see :mod:`rsca_core.progress`).

    Returns
    -------
    SimulatedSurvey
        Spectra are produced on demand by ``survey.spectra(rows)``.

    Examples
    --------
    >>> s = generate_survey(SimulationConfig(cluster_sizes=(3, 2), singleton_clusters=0), n_field=20, seed=1)
    >>> len(s.bundle_rows), int(s.stars_all["in_bundle"].sum())
    (25, 25)
    """
    cfg = config or SimulationConfig()
    if isinstance(n_field, bool) or int(n_field) != n_field or int(n_field) < 1:
        raise ValueError(f"n_field must be a positive integer, got {n_field!r}")
    n_field, seed = int(n_field), int(seed)
    rep = reporter(progress)
    rep.say(0.0, "drawing cluster members")
    drawer = StarDrawer(cfg, n_field, seed)
    clusters = drawer.clusters()
    targets = list(cfg.cluster_sizes) + [1] * cfg.singleton_clusters
    for j, cl in enumerate(clusters):
        drawer.members(j, cl, targets[j])
    n_lowprob_pass = sum(int(bl["ok"].sum()) for bl in drawer.blocks if bl["kind"] == "lowprob")
    quota = n_field - n_lowprob_pass
    if quota < 0:
        raise ValueError(
            f"n_field={n_field} is smaller than the {n_lowprob_pass} low-probability OCCAM "
            "candidates that end up in the field; ask for more field stars"
        )
    rep.say(0.2, "drawing field stars")
    drawer.field(quota)
    cat = concat_blocks(drawer.blocks)
    rep.say(0.6, "assigning fields, plates, visits, extinction and velocities")
    layout = _observe_survey(drawer, cat, clusters)
    rep.say(0.8, "building the star table and applying the paper's cuts")
    stars_all = _star_table(
        cat, clusters, layout, drawer.rng["obs"], apogee_ids(drawer.rng["ids"], layout["ra"], layout["dec"])
    )
    _add_identifiers(stars_all, seed)
    survey = _apply_cuts(cfg, seed, n_field, stars_all)
    survey.observation = layout["observation"]
    rep.say(1.0, f"survey table ready ({len(stars_all)} stars drawn)")
    return survey


def _observe_survey(drawer: StarDrawer, cat: dict, clusters: list) -> dict:
    """Sky fields, plates and visits, positions, A_K, RVs and the systematics amplitudes of every star."""
    rng_o = drawer.rng["obs"]
    is_field = cat["kind"] == "field"
    fields_ = _sky_fields(rng_o, max(1, int(np.ceil(is_field.sum() / 260))))
    book = _PlateBook(rng_o)
    fields_["plates"], fields_["nplates"] = book.assign(fields_["tel"], 2, lambda f: 1 + int(rng_o.random() < 0.4))
    cl = _cluster_fields(clusters)
    cl["plates"], cl["nplates"] = book.assign(cl["tel"], 3, lambda j: 1 + min(2, int(rng_o.poisson(0.8))))
    place = _place_stars(rng_o, cat, clusters, fields_, cl)
    visits = _visits(rng_o, book.plates, place["plate"])
    sys_ = _systematics(drawer.rng["sys"], drawer.cfg, visits["star_visits"], book.n_visits)
    visit_table = {(int(p_i), m): v for p_i, p in enumerate(book.plates) for m, v in zip(p["mjds"], p["vis"])}
    obs = Observation(
        visit_table=visit_table,
        star_visits=visits["star_visits"],
        plate_bc=np.array([p["bc"] for p in book.plates]),
        star_plate=place["plate"],
        ism_v=place["vism"],
        star_sys=sys_,
    )
    place.update(
        visit_strings=visits["strings"],
        plate_id=np.array([book.plates[p]["id"] for p in place["plate"]], np.int64),
        plate_bc=np.array([book.plates[p]["bc"] for p in place["plate"]]),
        observation=obs,
    )
    return place


def _sky_fields(rng_o, n_sky_fields: int) -> dict:
    """Sky fields of the field stars: names from (l, b), A_K, mean RV, ISM velocity, telescope, position."""
    fld_l = rng_o.uniform(0, 360, n_sky_fields)
    fld_b = np.where(
        rng_o.random(n_sky_fields) < 0.35, rng_o.uniform(-60, 60, n_sky_fields), rng_o.normal(0, 4, n_sky_fields)
    )
    fld_names = []
    used = set()
    for gl, bb in zip(fld_l, fld_b):
        nm = f"{int(gl):03d}{int(round(bb)):+03d}"
        k = 1
        base = nm
        while nm in used:
            nm = f"{base}-{k}"
            k += 1
        used.add(nm)
        fld_names.append(nm)
    high_lat = np.abs(fld_b) > 12
    fld_ak = np.where(
        high_lat,
        rng_o.uniform(0.0, 0.03, n_sky_fields),
        np.clip(rng_o.lognormal(np.log(0.15), 0.9, n_sky_fields), 0.005, 3.0),
    )
    fld_v = rng_o.normal(0, 40, n_sky_fields)
    fld_vism = rng_o.normal(0, 12, n_sky_fields)
    fld_tel = np.where(rng_o.random(n_sky_fields) < 0.2, "lco25m", "apo25m")
    fld_ra = rng_o.uniform(0, 360, n_sky_fields)
    fld_dec = np.where(fld_tel == "lco25m", rng_o.uniform(-80, -5, n_sky_fields), rng_o.uniform(-10, 80, n_sky_fields))
    return dict(
        n=n_sky_fields,
        names=np.asarray(fld_names, dtype=object),
        ak=fld_ak,
        v=fld_v,
        vism=fld_vism,
        tel=fld_tel,
        ra=fld_ra,
        dec=fld_dec,
    )


def _cluster_fields(clusters: list) -> dict:
    """The field name, telescope, A_K, RV and position (its literature values) of each cluster."""
    names = [c["name"] for c in clusters]
    return dict(
        names=np.array([("N" + n[4:] if n.startswith("NGC_") else n.replace("_", "")) for n in names], dtype=object),
        tel=np.array([c["telescope"] for c in clusters], dtype=object),
        ak=np.array([c["ak"] for c in clusters]),
        v=np.array([c["vhelio"] for c in clusters]),
        ra=np.array([c["ra"] for c in clusters]),
        dec=np.array([c["dec"] for c in clusters]),
    )


class _PlateBook:
    """Plates (1-6 visits each, with a barycentric correction) and the global visit numbering."""

    def __init__(self, rng_o):
        self.rng = rng_o
        self.plates = []  # dict(id, telescope, mjds, bc, vis (global visit indices), visits (string))
        self.next_plate = 4000 + int(rng_o.integers(0, 2000))
        self.n_visits = 0

    def new_plate(self, tel) -> int:
        """A new plate of telescope ``tel`` with its visits; returns its index."""
        rng_o = self.rng
        pid = self.next_plate
        self.next_plate += int(rng_o.integers(1, 40))
        n_vis = 1 + min(5, rng_o.poisson(2.0))
        mjd0 = int(rng_o.integers(55800, 58700))
        mjds = [int(m) for m in sorted(set(mjd0 + np.cumsum(rng_o.integers(1, 30, n_vis)) - 1))]
        vis = list(range(self.n_visits, self.n_visits + len(mjds)))
        self.n_visits += len(mjds)
        visits = ",".join(f"{tel}-{pid}-{m}" for m in mjds)
        self.plates.append(
            dict(id=pid, telescope=tel, mjds=mjds, bc=float(rng_o.uniform(-28, 28)), vis=vis, visits=visits)
        )
        return len(self.plates) - 1

    def assign(self, telescopes, width: int, how_many) -> tuple[np.ndarray, np.ndarray]:
        """Plates of each field (``how_many(i)`` of them, at most ``width``): (plates, counts)."""
        plates = np.full((len(telescopes), width), -1)
        counts = np.empty(len(telescopes), np.int64)
        for i, tel in enumerate(telescopes):
            k = how_many(i)
            counts[i] = k
            plates[i, :k] = [self.new_plate(tel) for _ in range(k)]
        return plates, counts


def _place_stars(rng_o, cat: dict, clusters: list, fld: dict, cl: dict) -> dict:
    """Field, telescope, plate, A_K, RV, ISM velocity and position of every star.

    Field stars are mostly in sky fields, some on the plates of cluster fields; cluster
    candidates are on their cluster's plates (mostly its main plate).
    """
    n = len(cat["teff"])
    kind, cidx = cat["kind"], cat["cluster_idx"]
    out = dict(
        field=np.empty(n, dtype=object),
        tel=np.empty(n, dtype=object),
        plate=np.empty(n, np.int64),
        ak=np.empty(n),
        v=np.empty(n),
        vism=np.zeros(n),
        ra=np.empty(n),
        dec=np.empty(n),
    )
    fi = np.flatnonzero(kind == "field")
    nf = len(fi)
    in_cl = rng_o.random(nf) < min(0.3, 60.0 * len(clusters) / max(1, nf))
    sky_f = rng_o.integers(0, fld["n"], nf)
    cj = rng_o.integers(0, len(clusters), nf)
    u_pl = rng_o.random(nf)
    g = rng_o.standard_normal((5, nf))
    vs = (
        pd.Series(cat["population"][fi])
        .map({"thin": 30.0, "thick": 55.0, "halo": 120.0, "dwarf": 25.0})
        .fillna(30.0)
        .to_numpy()
    )
    out["field"][fi] = np.where(in_cl, cl["names"][cj], fld["names"][sky_f])
    out["tel"][fi] = np.where(in_cl, cl["tel"][cj], fld["tel"][sky_f].astype(object))
    pl_cl = cl["plates"][cj, (u_pl * cl["nplates"][cj]).astype(int)]
    pl_sky = fld["plates"][sky_f, (u_pl * fld["nplates"][sky_f]).astype(int)]
    out["plate"][fi] = np.where(in_cl, pl_cl, pl_sky)
    out["ak"][fi] = np.where(
        in_cl, cl["ak"][cj] * np.exp(0.5 * g[0]), fld["ak"][sky_f] * np.exp(0.35 * g[0]) + 0.008 * g[1]
    )
    out["v"][fi] = np.where(in_cl, cl["v"][cj] * 0.3, fld["v"][sky_f]) + vs * g[2]
    out["vism"][fi] = np.where(in_cl, 0.0, fld["vism"][sky_f])
    out["ra"][fi] = np.where(in_cl, cl["ra"][cj] + 0.5 * g[3], fld["ra"][sky_f] + 0.6 * g[3])
    out["dec"][fi] = np.where(in_cl, cl["dec"][cj] + 0.5 * g[4], fld["dec"][sky_f] + 0.6 * g[4])
    for i in np.flatnonzero(kind != "field"):
        j = int(cidx[i])
        c = clusters[j]
        out["field"][i] = cl["names"][j]
        out["tel"][i] = c["telescope"]
        k = cl["nplates"][j]
        main = rng_o.random() < 0.7 or k == 1
        out["plate"][i] = cl["plates"][j, 0] if main else cl["plates"][j, int(rng_o.integers(1, k))]
        if kind[i] == "member" or cat["true_cluster"][i] != "none":
            out["ak"][i] = c["ak"] + rng_o.normal(0, 0.025)
            out["v"][i] = c["vhelio"] + rng_o.normal(0, 0.8)
        else:
            out["ak"][i] = c["ak"] * np.exp(rng_o.normal(0, 0.6))
            out["v"][i] = rng_o.normal(c["vhelio"], 25.0)
        out["ra"][i], out["dec"][i] = cl["ra"][j] + rng_o.normal(0, 0.15), cl["dec"][j] + rng_o.normal(0, 0.15)
    out["ak"] = np.clip(out["ak"], 0.0, None)
    out["ra"] %= 360.0
    out["dec"] = np.clip(out["dec"], -89.9, 89.9)
    return out


def _visits(rng_o, plates: list, star_plate: np.ndarray) -> dict:
    """Visits of each star: all MJDs of its plate (85 %) or a random non-empty subset."""
    n = len(star_plate)
    n_mjd = np.array([len(plates[p]["mjds"]) for p in star_plate])
    partial = (n_mjd > 1) & (rng_o.random(n) < 0.15)
    star_visits = [plates[p]["vis"] for p in star_plate]
    strings = np.array([plates[p]["visits"] for p in star_plate], dtype=object)
    for i in np.flatnonzero(partial):
        p = plates[star_plate[i]]
        k = int(rng_o.integers(1, len(p["mjds"])))
        pick = np.sort(rng_o.choice(len(p["mjds"]), size=k, replace=False))
        star_visits[i] = [p["vis"][q] for q in pick]
        strings[i] = ",".join(f"{p['telescope']}-{p['id']}-{p['mjds'][q]}" for q in pick)
    return dict(star_visits=star_visits, strings=strings)


def _systematics(rng_s, cfg: SimulationConfig, star_visits: list, n_vis: int) -> dict:
    """Systematics amplitudes: per visit (shared; a star carries the mean over its visits) or, with
    ``plate_systematics`` off, per star with the same marginal size."""
    from scipy import sparse

    n = len(star_visits)
    nv = np.array([len(v) for v in star_visits])
    W = sparse.csr_matrix(
        (
            np.repeat(1.0 / nv, nv),
            (np.repeat(np.arange(n), nv), np.fromiter((q for v in star_visits for q in v), np.int64, int(nv.sum()))),
        ),
        shape=(n, n_vis),
    )
    n_basis = instrument_templates()["basis"].shape[0]
    v_tel = rng_s.normal(0.0, 0.10, n_vis)
    v_sky = rng_s.normal(0.0, 0.004, n_vis)
    v_pat = rng_s.normal(0.0, 0.0025, (n_vis, n_basis)) * np.r_[np.ones(9), np.full(n_basis - 9, 0.4)]
    lsf = rng_s.standard_normal(n)  # fibre line-spread variation (standard units)
    if cfg.plate_systematics:
        s_tel, s_sky, s_pat = W @ v_tel, W @ v_sky, W @ v_pat
    else:
        # same marginal size, independent per star (mean of as many independent draws)
        s_tel = rng_s.normal(0.0, 0.10, n) / np.sqrt(nv)
        s_sky = rng_s.normal(0.0, 0.004, n) / np.sqrt(nv)
        s_pat = np.zeros((n, n_basis))
    # per-star template-mismatch factor of the rest-frame shift error (standard units; drawn last so
    # that every other draw is the same as without it)
    mismatch = rng_s.standard_normal(n)
    return {"tel": s_tel, "sky": s_sky, "pattern": s_pat, "lsf": lsf, "mismatch": mismatch}


def _star_table(cat: dict, clusters: list, place: dict, rng_o, ids: list) -> pd.DataFrame:
    """The DR16-like table of every drawn star (upper-case allStar/OCCAM columns, lower-case truth)."""
    n = len(cat["teff"])
    obs = cat["obs"]
    cidx = cat["cluster_idx"]
    cl_name = np.array([clusters[j]["name"] if j >= 0 else "" for j in cidx], dtype=object)
    cand = cidx >= 0
    tab = {
        "APOGEE_ID": np.array(ids, dtype=object),
        "TELESCOPE": place["tel"],
        "FIELD": place["field"],
        "TEFF": obs["teff"],
        "LOGG": obs["logg"],
        "M_H": obs["m_h"],
    }
    for el in ALLSTAR_ELEMENTS:
        tab[f"X_H_{el.upper()}"] = obs["xh"][el]
    tab.update(
        {
            "ASPCAPFLAG": obs["flag"],
            "AK_TARG": f32(place["ak"]),
            "VHELIO_AVG": f32(place["v"]),
            "SNR": cat["snr"],
            "VISITS": place["visit_strings"],
            "CLUSTER": cl_name,
            "CG_PROB": np.where(cand, cat["cg_prob"], np.nan),
        }
    )
    for c in ("RV_PROB", "FEH_PROB", "PM_PROB"):
        tab[c] = np.where(cand, f32(rng_o.uniform(0.5, 1.0, n)), np.nan)
    tab.update(
        {"true_teff": cat["teff"], "true_logg": cat["logg"], "true_fe_h": cat["feh"], "true_alpha_fe": cat["alpha"]}
    )
    for el in SPECIES:
        tab["true_" + abundance_column(el)] = cat["chem"][el]
    tab.update(
        {
            "population": cat["population"],
            "evol": cat["evol"],
            "age": cat["age"],
            "mass": cat["mass"],
            "true_cluster": cat["true_cluster"],
            "plate": place["plate_id"],
            "plate_bc": place["plate_bc"],
            "v_ism": place["vism"],
            "passes_cuts": cat["ok"],
        }
    )
    return pd.DataFrame(tab)


def _add_identifiers(stars_all: pd.DataFrame, seed: int) -> None:
    """SDSS-V ``SDSS_ID`` and Gaia ``GAIA_DR3_ID`` / ``GAIA_DR2_ID`` source ids of every star, from
    their own random stream (so the rest of the survey does not depend on them). The simulated Gaia
    DR2 id equals the DR3 one (true of most real sources)."""
    rng = np.random.default_rng([int(seed), 271828])
    n = len(stars_all)
    stars_all["SDSS_ID"] = 60_000_000 + np.sort(rng.choice(40_000_000, size=n, replace=False)).astype(np.int64)
    gaia = rng.choice(2**52, size=n, replace=False).astype(np.int64) + 10**15
    stars_all["GAIA_DR3_ID"] = gaia
    stars_all["GAIA_DR2_ID"] = gaia


def occam_members(stars_all: pd.DataFrame) -> pd.DataFrame:
    """The OCCAM member table of a survey: its candidates, probabilities in float32 (as in the file)."""
    cand = stars_all["CLUSTER"].to_numpy(dtype=object) != ""
    mem = stars_all.loc[cand, list(MEMBER_COLUMNS)].reset_index(drop=True)
    for c in MEMBER_COLUMNS[2:]:
        mem[c] = mem[c].to_numpy(np.float32)
    return mem


def _apply_cuts(cfg: SimulationConfig, seed: int, n_field: int, stars_all: pd.DataFrame) -> SimulatedSurvey:
    """The paper's cuts exactly as the loader applies them (:mod:`rsca_core.selection`); every
    spectrum of a simulated survey is readable, so no star is lost to a missing file."""
    selected, cutflow = select_stars(stars_all, occam_members(stars_all))
    keep = finalise_clusters(selected, np.ones(len(selected), bool), cutflow, 0, 0)
    is_member = selected["CLUSTER"].to_numpy(dtype=object) != ""
    order = bundle_order(keep, is_member)
    bundle_rows = selected["ROW"].to_numpy(np.int64)[order]
    in_bundle = np.zeros(len(stars_all), bool)
    in_bundle[bundle_rows] = True
    stars_all["in_bundle"] = in_bundle
    n_field_bundle = int((~is_member[order]).sum())
    if n_field_bundle != n_field:  # pragma: no cover - internal consistency
        raise RuntimeError(f"simulator bug: {n_field_bundle} field stars pass the cuts, expected {n_field}")
    return SimulatedSurvey(
        config=cfg,
        seed=seed,
        n_field=n_field,
        stars_all=stars_all,
        bundle_rows=bundle_rows,
        cutflow=cutflow,
        bundle_table=selected.iloc[order].reset_index(drop=True),
    )
