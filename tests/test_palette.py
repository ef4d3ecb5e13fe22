"""The cluster colours: 22 clusters (the paper's sample) must be told apart on every page.

Colour differences are computed here from first principles, independently of how the palette was
chosen: sRGB → CIELAB (D65) and the CIEDE2000 difference of Sharma, Wu & Dalal (2005), checked on
published values before it judges the palette. A CIEDE2000 difference of about 2 is just noticeable;
10 or more is two clearly different colours.
"""

from __future__ import annotations

import itertools
import math

import pytest

from rsca_core.labels import CLUSTER_PALETTE, cluster_colours


def srgb_to_lab(hex_colour: str) -> tuple[float, float, float]:
    h = hex_colour.lstrip("#")
    rgb = [int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    x = 0.4124564 * lin[0] + 0.3575761 * lin[1] + 0.1804375 * lin[2]
    y = 0.2126729 * lin[0] + 0.7151522 * lin[1] + 0.0721750 * lin[2]
    z = 0.0193339 * lin[0] + 0.1191920 * lin[1] + 0.9503041 * lin[2]

    def f(t):
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = f(x / 0.95047), f(y / 1.0), f(z / 1.08883)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def ciede2000(lab1, lab2) -> float:
    (L1, a1, b1), (L2, a2, b2) = lab1, lab2
    cbar = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(cbar**7 / (cbar**7 + 25**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1, c2 = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1 = math.degrees(math.atan2(b1, a1p)) % 360 if c1 else 0.0
    h2 = math.degrees(math.atan2(b2, a2p)) % 360 if c2 else 0.0
    dl, dc = L2 - L1, c2 - c1
    if c1 * c2 == 0:
        dh = 0.0
    else:
        dh = h2 - h1
        dh = dh - 360 if dh > 180 else dh + 360 if dh < -180 else dh
    dhh = 2 * math.sqrt(c1 * c2) * math.sin(math.radians(dh / 2))
    lbar, cbarp = (L1 + L2) / 2, (c1 + c2) / 2
    if c1 * c2 == 0:
        hbar = h1 + h2
    elif abs(h1 - h2) <= 180:
        hbar = (h1 + h2) / 2
    else:
        hbar = (h1 + h2 + 360) / 2 if h1 + h2 < 360 else (h1 + h2 - 360) / 2
    t = (
        1
        - 0.17 * math.cos(math.radians(hbar - 30))
        + 0.24 * math.cos(math.radians(2 * hbar))
        + 0.32 * math.cos(math.radians(3 * hbar + 6))
        - 0.20 * math.cos(math.radians(4 * hbar - 63))
    )
    dtheta = 30 * math.exp(-(((hbar - 275) / 25) ** 2))
    rc = 2 * math.sqrt(cbarp**7 / (cbarp**7 + 25**7))
    sl = 1 + 0.015 * (lbar - 50) ** 2 / math.sqrt(20 + (lbar - 50) ** 2)
    sc, sh = 1 + 0.045 * cbarp, 1 + 0.015 * cbarp * t
    rt = -math.sin(math.radians(2 * dtheta)) * rc
    return math.sqrt((dl / sl) ** 2 + (dc / sc) ** 2 + (dhh / sh) ** 2 + rt * (dc / sc) * (dhh / sh))


@pytest.mark.parametrize(
    "lab1, lab2, want",  # Sharma, Wu & Dalal (2005), Table 1, pairs 1, 7, 17 and 25
    [
        ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
        ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
        ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
        ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ],
)
def test_the_colour_difference_used_here_matches_published_values(lab1, lab2, want):
    assert ciede2000(lab1, lab2) == pytest.approx(want, abs=1e-4)


def test_srgb_to_lab_of_white_and_red():
    assert srgb_to_lab("#ffffff") == pytest.approx((100.0, 0.0, 0.0), abs=0.01)
    assert srgb_to_lab("#ff0000") == pytest.approx((53.24, 80.09, 67.20), abs=0.01)


def test_22_clusters_get_22_clearly_different_colours():
    names = [f"NGC_{i:04d}" for i in range(22)]
    colours = cluster_colours(names)
    assert len(set(colours.values())) == 22
    labs = [srgb_to_lab(c) for c in colours.values()]
    worst = min(ciede2000(a, b) for a, b in itertools.combinations(labs, 2))
    assert worst >= 20, f"two clusters' colours differ by only {worst:.1f} (CIEDE2000)"


def test_every_cluster_colour_shows_on_white_and_on_the_grey_density_maps():
    for colour in CLUSTER_PALETTE:
        lab = srgb_to_lab(colour)
        assert 30 <= lab[0] <= 80, colour  # neither near-white (invisible) nor near-black
        for grey in ("#ffffff", "#ececec", "#aaaaaa", "#555555"):  # the page background and density greys
            assert ciede2000(lab, srgb_to_lab(grey)) >= 15, (colour, grey)


def test_a_small_survey_gets_far_apart_colours_and_names_keep_theirs():
    five = cluster_colours(["e", "d", "c", "b", "a"])
    labs = [srgb_to_lab(c) for c in five.values()]
    assert min(ciede2000(a, b) for a, b in itertools.combinations(labs, 2)) >= 40
    assert cluster_colours(["a", "b"]) == {"a": five["a"], "b": five["b"]}  # sorted names: stable colours


def test_every_page_uses_the_one_palette():
    from pages import _ui

    names = [f"c{i}" for i in range(22)]
    assert _ui.cluster_colours(names) == cluster_colours(names)
