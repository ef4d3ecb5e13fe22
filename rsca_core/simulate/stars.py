"""Drawing the stars of a simulated survey: field populations, open clusters and their OCCAM
candidates, each block with observed labels, drawn until the paper's cuts leave the asked numbers."""

from __future__ import annotations

import numpy as np

from ..constants import ALLSTAR_ELEMENTS, ANOMALOUS_STAR, SPECIES
from ..selection import star_cuts
from .chemistry import draw_giants, element_scatter, elements_from_latent, isochrone_teff, mass_from_age
from .clusters import CLUSTER_FACTS
from .config import CLUSTER_NAMES, SimulationConfig
from .labels import f32, observe_labels


def passes(obs: dict) -> np.ndarray:
    """The paper's per-star cuts (SPEC §4) on a block's observed labels."""
    return star_cuts(obs["teff"], obs["logg"], {sp: obs["xh"][sp] for sp in SPECIES}, obs["flag"])


class StarDrawer:
    """Draws the stars of a survey (all stars, passing or failing the cuts) from seeded streams."""

    def __init__(self, config: SimulationConfig, n_field: int, seed: int):
        self.cfg = config
        self.n_field = int(n_field)
        self.seed = int(seed)
        ss = np.random.SeedSequence([self.seed, 314159])
        names = ("field", "cluster", "labels", "obs", "ids", "sys")
        self.rng = {n: np.random.default_rng(s) for n, s in zip(names, ss.spawn(len(names)))}
        self.blocks = []

    # -------------------------------------------------------------- populations
    def field_candidates(self, n: int) -> dict:
        """Field giants (thin, thick, halo) and dwarfs, with true parameters and chemistry."""
        rng, cfg = self.rng["field"], self.cfg
        thick = cfg.thick_fraction if cfg.two_alpha_sequences else 0.0
        thick = min(thick, 0.9)
        p = np.array([0.91 - thick, thick, 0.02, 0.07])  # thin, thick, halo, dwarfs
        pop = rng.choice(np.array(["thin", "thick", "halo", "dwarf"]), size=n, p=p)
        feh = np.empty(n)
        age = np.empty(n)
        m = {k: pop == k for k in ("thin", "thick", "halo", "dwarf")}
        for k, (mu, sd, lo, hi) in {
            "thin": (-0.05, 0.22, -1.0, 0.5),
            "thick": (-0.45, 0.22, -1.3, 0.3),
            "halo": (-1.3, 0.4, -2.3, -0.6),
            "dwarf": (-0.05, 0.22, -1.0, 0.5),
        }.items():
            feh[m[k]] = np.clip(rng.normal(mu, sd, m[k].sum()), lo, hi)
        age[m["thin"]] = np.clip(rng.gamma(3.0, 1.6, m["thin"].sum()), 0.4, 11.0)
        age[m["dwarf"]] = rng.uniform(1, 11, m["dwarf"].sum())
        age[m["thick"]] = np.clip(rng.normal(10.5, 1.2, m["thick"].sum()), 7.5, 13.0)
        age[m["halo"]] = rng.uniform(11, 13, m["halo"].sum())
        alpha = self.alpha_of(
            rng, feh, age, np.where(m["thin"] | m["dwarf"], "low", np.where(m["thick"], "high", "halo"))
        )
        mass = mass_from_age(age, feh)
        logg, teff, is_rc = draw_giants(rng, n, feh, mass, (0.9, 3.7), 0.28, spread=True, isochrones=cfg.isochrones)
        nd = m["dwarf"].sum()
        logg[m["dwarf"]] = rng.uniform(3.9, 4.7, nd)
        teff[m["dwarf"]] = rng.uniform(4000, 5600, nd)
        is_rc[m["dwarf"]] = False
        chem = elements_from_latent(feh, alpha, age, mass, element_scatter(rng, n, cfg.element_scatter), cfg.dredge_up)
        evol = np.where(m["dwarf"], "dwarf", np.where(is_rc, "rc", "rgb"))
        return dict(
            population=pop,
            feh=feh,
            alpha=alpha,
            age=age,
            mass=mass,
            logg=logg,
            teff=teff,
            evol=evol,
            chem=chem,
            true_cluster=np.full(n, "none", dtype=object),
        )

    def alpha_of(self, rng, feh, age, seq) -> np.ndarray:
        """Two-sequence [α/Fe]: low-α thin disc, high-α thick disc (merging at [Fe/H] ≈ +0.1)."""
        low = 0.02 - 0.08 * feh + 0.010 * (age - 5.0)
        high = np.maximum(0.22 - 0.15 * (feh + 0.5), low + 0.02)
        halo = np.full_like(feh, 0.30)
        if not self.cfg.two_alpha_sequences:
            high = low
        base = np.where(seq == "low", low, np.where(seq == "high", high, halo))
        return base + rng.normal(0, 0.025, len(feh))

    def cluster_members(self, rng, cl: dict, n: int) -> dict:
        """n candidate members of cluster ``cl`` (dict with age, feh, alpha, offsets)."""
        cfg = self.cfg
        feh = np.full(n, cl["feh"])
        mass = np.full(n, cl["mass"])
        if cfg.cluster_isochrone_spread:
            logg, teff, is_rc = draw_giants(
                rng, n, feh, mass, (1.2, 3.5), 0.35, spread=False, isochrones=cfg.isochrones
            )
        else:
            logg = np.full(n, cl["logg0"]) + rng.normal(0, 0.03, n)
            teff = isochrone_teff(logg, feh, mass, np.zeros(n, bool)) + rng.normal(0, 10, n)
            is_rc = np.zeros(n, bool)
        scat = {el: np.full(n, cl["offset"][el]) + rng.normal(0, cfg.cluster_spread, n) for el in ALLSTAR_ELEMENTS}
        chem = elements_from_latent(feh, np.full(n, cl["alpha"]), np.full(n, cl["age"]), mass, scat, cfg.dredge_up)
        return dict(
            population=np.full(n, "cluster", dtype=object),
            feh=feh,
            alpha=np.full(n, cl["alpha"]),
            age=np.full(n, cl["age"]),
            mass=mass,
            logg=logg,
            teff=teff,
            evol=np.where(is_rc, "rc", "rgb"),
            chem=chem,
            true_cluster=np.full(n, cl["name"], dtype=object),
        )

    def observe(self, s: dict, snr) -> dict:
        """ASPCAP-like observed labels and flags for a block of stars (dict)."""
        return observe_labels(self.rng["labels"], self.cfg, s, snr)

    def snr(self, n: int, cluster: bool = False) -> np.ndarray:
        """Lognormal SNR of ``n`` stars (field or cluster medians of the config), float32-rounded."""
        med = self.cfg.snr_cluster_median if cluster else self.cfg.snr_field_median
        sig = self.cfg.snr_sigma_ln + (0.02 if cluster else 0.0)
        return f32(np.clip(self.rng["obs"].lognormal(np.log(med), sig, n), 8.0, 2000.0))

    # -------------------------------------------------------------- survey blocks
    def clusters(self) -> list[dict]:
        """The survey's clusters: name, age, [Fe/H], [α/Fe], mass, chemical offsets, RV, A_K, position,
        telescope.

        [Fe/H], age, mean RV, A_K and position are the cluster's literature values
        (:data:`~.clusters.CLUSTER_FACTS`), the same for every seed. Drawn per seed: [α/Fe] (the
        low-α sequence at that [Fe/H] and age plus its 0.025 dex scatter), the per-element chemical
        offsets (``element_scatter``), the isochrone point of a non-spread cluster and the telescope.
        """
        rng_c, cfg = self.rng["cluster"], self.cfg
        names = list(CLUSTER_NAMES[: len(cfg.cluster_sizes) + cfg.singleton_clusters])
        clusters = []
        for name in names:
            facts = CLUSTER_FACTS[name]
            age, feh = facts.age_gyr, facts.feh
            seq = np.array(["low"])
            alpha = float(self.alpha_of(rng_c, np.array([feh]), np.array([age]), seq)[0])
            cl = dict(
                name=name,
                age=age,
                feh=feh,
                alpha=alpha,
                mass=float(mass_from_age(age, feh)),
                offset={el: float(v[0]) for el, v in element_scatter(rng_c, 1, cfg.element_scatter).items()},
                logg0=float(rng_c.uniform(2.0, 2.7)),
                vhelio=facts.vhelio,
                ak=facts.a_k,
                ra=facts.ra,
                dec=facts.dec,
                telescope="lco25m" if rng_c.random() < 0.2 else "apo25m",
            )
            clusters.append(cl)
        return clusters

    def add_block(self, s, obs, snr, extra) -> None:
        """Keep a block of drawn stars (true parameters, observed labels, SNR, bookkeeping)."""
        d = dict(s)
        d.update(obs=obs, snr=snr)
        d.update(extra)
        self.blocks.append(d)

    def members(self, j: int, cl: dict, target: int) -> None:
        """Members of cluster ``j``, drawn until exactly ``target`` pass the cuts (failing draws are
        kept: their natural share), then OCCAM candidates with a low membership probability."""
        rng_c = self.rng["cluster"]
        got = 0
        while got < target:
            n = max(4, int(1.6 * (target - got)) + 1)
            s = self.cluster_members(rng_c, cl, n)
            snr = self.snr(n, cluster=True)
            obs = self.observe(s, snr)
            ok = passes(obs)
            cum = np.cumsum(ok)
            # keep draws up to the one that completes the target
            last = int(np.searchsorted(cum, target - got)) + 1 if cum[-1] >= target - got else n
            keep = np.arange(last)
            s = take(s, keep)
            obs = take_obs(obs, keep)
            got += int(ok[:last].sum())
            cg = f32(rng_c.uniform(0.81, 1.0, last))
            self.add_block(
                s, obs, snr[keep], dict(kind="member", cluster_idx=np.full(last, j), cg_prob=cg, ok=ok[:last])
            )
        self.low_probability_candidates(j, cl, target)

    def low_probability_candidates(self, j: int, cl: dict, target: int) -> None:
        """OCCAM candidates with CG_PROB < 0.8 (half true siblings, half field stars): field stars."""
        rng_c = self.rng["cluster"]
        n_low = rng_c.poisson(self.cfg.low_prob_candidates * max(target, 2))
        if not n_low:
            return
        true_sib = rng_c.random(n_low) < 0.5
        s_sib = self.cluster_members(rng_c, cl, n_low)
        s_fld = self.field_candidates(n_low)
        s = {
            k: np.where(true_sib if np.ndim(v) == 1 else true_sib[:, None], s_sib[k], s_fld[k])
            if k != "chem"
            else {el: np.where(true_sib, s_sib["chem"][el], s_fld["chem"][el]) for el in ALLSTAR_ELEMENTS}
            for k, v in s_sib.items()
        }
        snr = self.snr(n_low)
        obs = self.observe(s, snr)
        ok = passes(obs)
        cg = f32(rng_c.uniform(0.05, 0.78, n_low))
        self.add_block(s, obs, snr, dict(kind="lowprob", cluster_idx=np.full(n_low, j), cg_prob=cg, ok=ok))

    def field(self, quota: int) -> None:
        """Field stars: exactly ``quota`` passing the cuts plus ``failing_field_fraction`` failing ones."""
        n_fail_target = int(round(self.cfg.failing_field_fraction * quota))
        got_pass, got_fail = 0, 0
        while got_pass < quota or got_fail < n_fail_target:
            need = max(quota - got_pass, 1)
            n = int(need * 1.5) + 64
            s = self.field_candidates(n)
            snr = self.snr(n)
            obs = self.observe(s, snr)
            ok = passes(obs)
            take_pass = np.flatnonzero(ok)[: max(0, quota - got_pass)]
            take_fail = np.flatnonzero(~ok)[: max(0, n_fail_target - got_fail)]
            keep = np.sort(np.concatenate([take_pass, take_fail]))
            if not len(keep):
                continue
            got_pass += len(take_pass)
            got_fail += len(take_fail)
            extra = dict(
                kind="field", cluster_idx=np.full(len(keep), -1), cg_prob=np.full(len(keep), np.nan), ok=ok[keep]
            )
            self.add_block(take(s, keep), take_obs(obs, keep), snr[keep], extra)


def take(s: dict, keep) -> dict:
    """Rows ``keep`` of a block of true parameters (``chem`` is a dict of arrays)."""
    out = {}
    for k, v in s.items():
        out[k] = {el: a[keep] for el, a in v.items()} if k == "chem" else np.asarray(v)[keep]
    return out


def take_obs(obs: dict, keep) -> dict:
    """Rows ``keep`` of a block of observed labels (``xh`` is a dict of arrays)."""
    return {k: ({el: a[keep] for el, a in v.items()} if k == "xh" else v[keep]) for k, v in obs.items()}


def concat_blocks(blocks: list) -> dict:
    """One dict of per-star arrays from the blocks, in drawing order."""
    out = {}
    for key in blocks[0]:
        if key == "chem":
            out[key] = {el: np.concatenate([bl[key][el] for bl in blocks]) for el in ALLSTAR_ELEMENTS}
        elif key == "obs":
            ob = {}
            for k in blocks[0]["obs"]:
                if k == "xh":
                    ob[k] = {el: np.concatenate([bl["obs"]["xh"][el] for bl in blocks]) for el in ALLSTAR_ELEMENTS}
                else:
                    ob[k] = np.concatenate([bl["obs"][k] for bl in blocks])
            out[key] = ob
        elif key == "kind":
            out[key] = np.concatenate([np.full(len(bl["teff"]), bl["kind"], dtype=object) for bl in blocks])
        else:
            out[key] = np.concatenate([np.asarray(bl[key]) for bl in blocks])
    return out


def apogee_ids(rng, ra, dec) -> list:
    """2MASS-style identifiers 2MHHMMSSss±DDMMSSs from positions; unique (colliding ones moved)."""
    ra = np.asarray(ra, float).copy()
    dec = np.asarray(dec, float)
    ids = np.empty(len(ra), dtype=object)
    todo = np.arange(len(ra))
    taken = set()
    while len(todo):
        h = ra[todo] / 15.0
        hs = np.floor(h * 360000 + 1e-6).astype(np.int64)  # hundredths of a second of time
        ad = np.abs(dec[todo])
        ds = np.floor(ad * 36000 + 1e-6).astype(np.int64)  # tenths of an arcsecond
        sign = np.where(dec[todo] >= 0, "+", "-")
        cand = [
            f"2M{a // 360000:02d}{a // 6000 % 60:02d}{a % 6000:04d}{s}{d // 36000:02d}{d // 600 % 60:02d}{d % 600:03d}"
            for a, d, s in zip(hs.tolist(), ds.tolist(), sign)
        ]
        again = []
        for k, s in zip(todo, cand):
            if s in taken or s == ANOMALOUS_STAR:
                again.append(k)
            else:
                taken.add(s)
                ids[k] = s
        todo = np.array(again, dtype=np.int64)
        if len(todo):
            ra[todo] = (ra[todo] + rng.uniform(1e-4, 1e-3, len(todo))) % 360.0
    return list(ids)
