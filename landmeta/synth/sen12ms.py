"""Synthetic SEN12MS: regions (season, scene) over the globe, each rendered as Sentinel-1,
Sentinel-2 and land-cover GeoTIFF patches in the real layout and formats."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import Transformer
from scipy.ndimage import gaussian_filter

from landmeta.data.sen12ms import S1_BANDS, S2_BANDS
from landmeta.synth import spectra as sp
from landmeta.synth.landscape import make_landscape, smooth_noise

SEASONS: list[str] = ["ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter"]
PATCH_PX = 256
PIXEL_M = 10.0
N_CLASSES = 10
WATER, URBAN, CROP, SNOW, FOREST = 9, 6, 5, 7, 0

# Relative class abundance (Forest, Shrubland, Savanna, Grassland, Wetlands, Cropland, Urban,
# Snow/Ice, Barren, Water) of each landscape type.
BIOMES: dict[str, list[float]] = {
    "farmland": [2, 0.3, 0.2, 2, 0.3, 4, 1.2, 0, 0.3, 0.8],
    "boreal": [4, 1.2, 0.2, 1, 1.5, 0.5, 0.3, 0.3, 0.3, 1.5],
    "tropical": [4, 0.5, 1.5, 1, 1, 1.5, 0.4, 0, 0.1, 0.8],
    "savanna": [0.8, 2, 3.5, 2.5, 0.3, 1.2, 0.3, 0, 0.6, 0.3],
    "arid": [0, 3, 0.5, 1.5, 0, 1, 0.5, 0, 3.5, 0.2],
    "mediterranean": [1.5, 3, 0.5, 1.5, 0.1, 2.5, 1, 0, 0.6, 0.4],
    "steppe": [0.3, 1.5, 0.5, 4, 0.4, 1.5, 0.3, 0.2, 1.5, 0.3],
    "mountain": [2.5, 1.5, 0, 2, 0.1, 0.4, 0.1, 2, 2.5, 0.4],
    "delta": [0.8, 0.3, 0.3, 1, 2.5, 3, 1, 0, 0.2, 2],
    "city": [1.2, 0.3, 0.2, 1.2, 0.1, 1.5, 3.5, 0, 0.4, 0.7],
}

# Land locations (lon, lat, continent, landscape type), listed by continent.
LOCATIONS: list[tuple[float, float, str, str]] = [
    (-93.5, 42.0, "North America", "farmland"), (-106.0, 52.0, "North America", "farmland"),
    (-73.0, 50.0, "North America", "boreal"), (-111.5, 33.5, "North America", "arid"),
    (-91.0, 30.0, "North America", "delta"), (-120.0, 37.0, "North America", "mediterranean"),
    (-106.0, 39.5, "North America", "mountain"), (-99.1, 19.4, "North America", "city"),
    (-114.0, 56.0, "North America", "boreal"), (-87.8, 41.9, "North America", "city"),
    (-62.0, -4.0, "South America", "tropical"), (-47.0, -15.0, "South America", "savanna"),
    (-61.0, -35.0, "South America", "farmland"), (-69.0, -45.0, "South America", "steppe"),
    (-70.0, -33.0, "South America", "mountain"), (-46.6, -23.5, "South America", "city"),
    (-69.5, -23.5, "South America", "arid"),
    (1.5, 48.3, "Europe", "farmland"), (26.0, 62.0, "Europe", "boreal"), (32.0, 49.0, "Europe", "farmland"),
    (-5.0, 37.5, "Europe", "mediterranean"), (10.0, 46.5, "Europe", "mountain"), (5.0, 52.2, "Europe", "delta"),
    (2.35, 48.85, "Europe", "city"), (20.0, 52.0, "Europe", "farmland"),
    (3.0, 14.0, "Africa", "arid"), (37.0, -1.0, "Africa", "savanna"), (28.0, -14.0, "Africa", "savanna"),
    (22.0, 0.0, "Africa", "tropical"), (31.0, 30.8, "Africa", "delta"), (3.4, 6.5, "Africa", "city"),
    (28.0, -26.0, "Africa", "steppe"), (-6.0, 33.0, "Africa", "mediterranean"), (3.0, 28.0, "Africa", "arid"),
    (75.0, 30.5, "Asia", "farmland"), (105.0, 47.0, "Asia", "steppe"), (114.0, 1.0, "Asia", "tropical"),
    (105.8, 10.0, "Asia", "delta"), (85.0, 28.3, "Asia", "mountain"), (90.0, 60.0, "Asia", "boreal"),
    (121.4, 31.2, "Asia", "city"), (68.0, 50.0, "Asia", "steppe"), (115.5, 37.0, "Asia", "farmland"),
    (89.0, 32.0, "Asia", "mountain"), (142.5, 43.3, "Asia", "farmland"),
    (132.0, -14.0, "Oceania", "savanna"), (145.0, -34.5, "Oceania", "farmland"),
    (133.0, -24.0, "Oceania", "arid"), (170.5, -43.8, "Oceania", "mountain"),
    (151.0, -33.8, "Oceania", "city"), (117.0, -32.0, "Oceania", "mediterranean"),
]


@dataclass
class Region:
    """One (season, scene) with the regional parameters of its imagery."""

    season: int
    scene: int
    lon: float
    lat: float
    continent: str
    biome: str
    proportions: np.ndarray  # class mix of the region (0 = absent)
    patches: list[int]  # patch numbers (the N of `_pN.tif`)
    green: float  # phenology: share of the green endmember kept
    soil: np.ndarray  # soil spectrum
    class_gain: np.ndarray  # (classes, bands) regional signature variants
    forest_types: list[int]  # IGBP forest types of the landscape
    illumination: float
    haze: float
    snow_cover: float  # seasonal snow lying over open land
    cloudiness: float  # probability that a patch has clouds
    s1_offset_db: float  # incidence angle and moisture
    s1_class_offset_db: np.ndarray  # per-class regional backscatter offsets

    @property
    def name(self) -> str:
        return f"{SEASONS[self.season]}_{self.scene}"

    @property
    def epsg(self) -> int:
        zone = int((self.lon + 180.0) // 6.0) + 1
        return (32600 if self.lat >= 0 else 32700) + zone


def make_regions(n_regions: int, patches_per_region: int, rng: np.random.Generator) -> list[Region]:
    """Regions spread over the continents (taken in turn), seasons in turn, parameters drawn."""
    by_continent: dict[str, list[tuple[float, float, str, str]]] = {}
    for loc in LOCATIONS:
        by_continent.setdefault(loc[2], []).append(loc)
    for locs in by_continent.values():
        rng.shuffle(locs)
    order = [locs[i] for i in range(max(map(len, by_continent.values())))
             for locs in by_continent.values() if i < len(locs)]
    scenes_used: dict[int, set[int]] = {s: set() for s in range(4)}
    regions = []
    for i in range(n_regions):
        lon, lat, continent, biome = order[i % len(order)]
        season = i % 4
        scene = int(rng.integers(1, 150))
        while scene in scenes_used[season]:
            scene = int(rng.integers(1, 150))
        scenes_used[season].add(scene)
        regions.append(_draw_region(season, scene, lon + rng.normal(0, 0.3), lat + rng.normal(0, 0.3),
                                    continent, biome, patches_per_region, rng))
    return regions


def _draw_region(season: int, scene: int, lon: float, lat: float, continent: str, biome: str,
                 n_patches: int, rng: np.random.Generator) -> Region:
    # A few main classes drawn from the landscape type's abundances, a few rare ones, the rest absent.
    prior = np.asarray(BIOMES[biome], float)
    main = rng.choice(N_CLASSES, size=int(rng.integers(4, 6)), replace=False, p=prior / prior.sum())
    props = np.zeros(N_CLASSES)
    props[main] = rng.dirichlet(np.full(len(main), 8.0))
    others = np.flatnonzero((prior > 0) & (props == 0))
    rare = rng.choice(others, size=min(len(others), int(rng.integers(0, 3))), replace=False)
    props[rare] = rng.uniform(0.02, 0.06, size=len(rare))
    props /= props.sum()
    local = (season + 2) % 4 if lat < 0 else season
    cold = float(np.clip((abs(lat) - 38.0) / 20.0, 0.0, 1.0))
    snow_cover = cold * rng.uniform(0.15, 0.6) if local == 3 else (0.2 * cold * rng.random() if local == 0 else 0.0)
    if biome == "mountain":
        snow_cover = max(snow_cover, rng.uniform(0.0, 0.25))
    forest_types = {"tropical": [2], "boreal": [1, 3, 5], "mountain": [1, 5]}.get(biome, [4, 5, 1])
    gain = np.exp(rng.normal(0, 0.07, size=(N_CLASSES, 1))
                  + rng.normal(0, 0.05, size=(N_CLASSES, 1)) * np.linspace(-1, 1, 13)[None, :])
    return Region(
        season=season, scene=scene, lon=float(lon), lat=float(lat), continent=continent, biome=biome,
        proportions=props, patches=sorted(rng.choice(np.arange(1, 1200), size=n_patches, replace=False).tolist()),
        green=sp.greenness(season, lat, rng) * (0.6 if biome == "arid" else 1.0),
        soil=sp.soil_spectrum(rng.uniform(0.6, 1.5), rng.uniform(-0.4, 0.8)),
        class_gain=gain, forest_types=forest_types,
        illumination=float(rng.uniform(0.85, 1.12)), haze=float(rng.lognormal(np.log(0.4), 0.6)),
        snow_cover=float(snow_cover), cloudiness=float(rng.uniform(0.0, 0.5)),
        s1_offset_db=float(rng.normal(0, 1.0)), s1_class_offset_db=rng.normal(0, 0.8, size=N_CLASSES),
    )


@dataclass
class Patch:
    """One rendered 256x256 patch: Sentinel-1 (dB), Sentinel-2 (DN), land cover (4 bands)."""

    s1: np.ndarray  # (2, H, W) float32
    s2: np.ndarray  # (13, H, W) uint16
    lc: np.ndarray  # (4, H, W) uint8
    classes: np.ndarray  # (H, W) simplified class ids


def render_patch(region: Region, rng: np.random.Generator, size: int = PATCH_PX) -> Patch:
    """Draw a label map for one patch of `region` and render its S1, S2 and land-cover rasters."""
    props = rng.dirichlet(region.proportions * 20.0 + 1e-3)  # patches differ around the regional mix
    props = np.where(region.proportions > 0, props, 0.0)
    land = make_landscape(size, props, rng, patch_px=rng.uniform(50, 110), field_px=rng.uniform(16, 36),
                          tessellated=(CROP, URBAN), water=WATER if region.proportions[WATER] > 0 else None,
                          river_prob=0.35, river_width=7.0)
    cls, parcels, pclass = land.classes, land.parcels, land.parcel_class
    n_par = len(pclass)

    # Per-parcel IGBP subtype and endmember fractions.
    igbp = np.array([rng.choice(region.forest_types) if c == FOREST else rng.choice(sp.IGBP_OF_CLASS[int(c)])
                     for c in pclass])
    mean = sp.CLASS_FRACTIONS[pclass].copy()
    crop = pclass == CROP
    if crop.any():  # each field at its own stage; greener seasons have more green fields
        p_stage = np.array([region.green, 0.5, 1.2 - region.green, 0.6])
        mean[crop] = sp.CROP_STAGES[rng.choice(4, size=int(crop.sum()), p=p_stage / p_stage.sum())]
    frac = np.stack([rng.dirichlet(m * k + 1e-3) for m, k in zip(mean, sp.CLASS_CONCENTRATION[pclass])])
    leafless = np.isin(igbp, list(sp.DECIDUOUS_IGBP))
    green = np.where(leafless, region.green ** 2, region.green)
    moved = frac[:, 0] * (1.0 - green)
    frac[:, 0] -= moved
    frac[:, 1] += moved

    # Pixel fractions: parcel fractions plus smooth within-parcel texture.
    f = frac[parcels]  # (H, W, 6)
    f = f.astype(np.float32)
    f[..., 0] *= np.exp(0.2 * smooth_noise(size, rng.uniform(5, 15), rng))
    f[..., 2] *= np.exp(0.2 * smooth_noise(size, rng.uniform(5, 15), rng))
    snow = region.snow_cover > 0 and rng.random() < 0.8
    if snow:  # seasonal snow over open land, patchy; the label keeps the land cover
        cover = np.clip(smooth_noise(size, 40, rng) * 0.5 + 1.6 * region.snow_cover - 0.6, 0, 1)
        cover = cover * (cls != FOREST) * (cls != WATER) + cover * 0.3 * (cls == FOREST)
        f = f * (1 - cover[..., None])
        f[..., 5] += cover
    f /= f.sum(-1, keepdims=True)
    emb = sp.ENDMEMBER_SPECTRA.astype(np.float32)
    emb[2] = region.soil
    refl = np.einsum("hwe,eb->bhw", f, emb)
    refl *= region.class_gain.astype(np.float32)[cls].transpose(2, 0, 1)
    grain = rng.standard_normal((size, size)) + smooth_noise(size, rng.uniform(2, 4), rng)
    shade = sp.CLASS_SHADE[cls] * np.exp(sp.CLASS_GRAIN[cls] * grain)
    if (cls == URBAN).any():  # streets and roofs: a rotated grid of dark lanes, bright/dark blocks
        a = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:size, 0:size]
        u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
        block = rng.uniform(8, 16)
        street = ((u % block) < 1.5) | ((v % block) < 1.5)
        roofs = np.exp(0.25 * rng.standard_normal((size // 3 + 1, size // 3 + 1))).repeat(3, 0).repeat(3, 1)
        shade = np.where(cls == URBAN, shade * np.where(street, 0.6, roofs[:size, :size]), shade)
    terrain = 1.0 + (0.12 if region.biome == "mountain" else 0.04) * smooth_noise(size, 30, rng) * (cls != WATER)
    refl *= (shade * terrain * region.illumination).astype(np.float32)[None]
    refl = gaussian_filter(refl, sigma=(0, 0.6, 0.6))  # point spread of the sensor

    # Atmosphere, clouds, sensor noise, native band resolutions, quantisation, nodata.
    path = sp.RAYLEIGH_SPECTRUM + sp.HAZE_SPECTRUM * region.haze
    toa = path[:, None, None] + (1 - 0.1 * region.haze) * refl
    if rng.random() < region.cloudiness:
        dens = smooth_noise(size, rng.uniform(8, 20), rng)
        thick = np.clip((dens - np.quantile(dens, 1 - rng.uniform(0.005, 0.05))) * 2.0, 0, 1)
        shadow = np.roll(thick, shift=tuple(rng.integers(5, 15, size=2)), axis=(0, 1))
        toa = toa * (1 - 0.6 * shadow)[None]
        toa = toa * (1 - thick)[None] + sp.CLOUD_SPECTRUM[:, None, None] * rng.uniform(0.8, 1.4) * thick[None]
    toa = toa + rng.standard_normal(toa.shape, dtype=np.float32) * (0.0008 + 0.004 * toa)
    toa = _native_resolution(toa)
    s2 = np.clip(np.round(toa * 10000), 1, 28000).astype(np.uint16)
    if rng.random() < 0.08:  # swath edge: a corner without data
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] - size / 2
        s2[:, (xx * np.cos(a) + yy * np.sin(a)) > size * rng.uniform(0.3, 0.65)] = 0

    # Sentinel-1: per-parcel backscatter, moisture and incidence offsets, multiplicative speckle.
    db = sp.S1_CLASS_DB[pclass] + region.s1_offset_db + region.s1_class_offset_db[pclass][:, None]
    db = db + rng.normal(0, 1, (n_par, 1)) * sp.S1_CLASS_SPREAD_DB[pclass][:, None]
    if crop.any():
        db[crop] += (frac[crop, 0:1] - 0.4) * np.array([[3.0, 6.0]])
    lin = 10 ** (db[parcels].transpose(2, 0, 1) / 10)
    lin = lin * np.exp(0.15 * smooth_noise(size, 12, rng))[None]
    lin = lin * np.where(cls == URBAN, np.exp(rng.normal(0, 0.8, (size, size))), 1.0)[None]
    lin = lin * rng.gamma(sp.S1_LOOKS, 1.0 / sp.S1_LOOKS, size=lin.shape)
    # Stored in steps of 1/32 dB (far below speckle), which lets the float32 files compress.
    s1 = (np.round(np.clip(10 * np.log10(lin + 1e-6), -50, 20) * 32) / 32).astype(np.float32)

    igbp_map = igbp[parcels]
    lcc = np.array([sp.LCCS_OF_IGBP.get(i, (255, 255, 255)) for i in range(18)], dtype=np.uint8)
    lc = np.concatenate([igbp_map[None].astype(np.uint8), lcc[igbp_map].transpose(2, 0, 1)], axis=0)
    return Patch(s1=s1, s2=s2, lc=lc, classes=cls.astype(np.uint8))


def _native_resolution(refl: np.ndarray) -> np.ndarray:
    """Average the 20 m and 60 m bands over their native footprints, resampled back to 10 m."""
    out = refl.copy()
    size = refl.shape[1]
    for b, res in enumerate(sp.S2_RESOLUTION_M):
        k = int(res // 10)
        if k == 1:
            continue
        n = -(-size // k) * k
        padded = np.pad(refl[b], ((0, n - size), (0, n - size)), mode="edge")
        blocks = padded.reshape(n // k, k, n // k, k).mean(axis=(1, 3))
        out[b] = blocks.repeat(k, 0).repeat(k, 1)[:size, :size]
    return out


def patch_origin(region: Region, index: int) -> tuple[int, float, float]:
    """UTM EPSG code and upper-left corner of patch number `index` of a region (a grid near the scene centre)."""
    east, north = Transformer.from_crs(4326, region.epsg, always_xy=True).transform(region.lon, region.lat)
    cols = int(np.ceil(np.sqrt(len(region.patches))))
    stride = PATCH_PX * PIXEL_M * 1.25
    r, c = divmod(index, cols)
    x0 = np.floor(east / 10.0) * 10.0 + (c - cols / 2) * stride
    y0 = np.floor(north / 10.0) * 10.0 - (r - cols / 2) * stride
    return region.epsg, float(x0), float(y0)


def write_patch(root: Path, region: Region, index: int, patch: Patch) -> list[Path]:
    """Write the three GeoTIFFs of one patch in SEN12MS's layout; returns their paths."""
    season = SEASONS[region.season]
    pid = region.patches[index]
    epsg, x0, y0 = patch_origin(region, index)
    profile = dict(driver="GTiff", width=PATCH_PX, height=PATCH_PX, crs=f"EPSG:{epsg}",
                   transform=Affine.translation(x0, y0) @ Affine.scale(PIXEL_M, -PIXEL_M), compress="deflate", zlevel=3,
                   tiled=True, blockxsize=PATCH_PX, blockysize=PATCH_PX, interleave="band")
    paths = []
    for kind, data, names, extra in (
        ("s1", patch.s1, S1_BANDS, dict(predictor=3)),
        ("s2", patch.s2, S2_BANDS, dict(predictor=2, nodata=0)),
        ("lc", patch.lc, sp.LC_BANDS, {}),
    ):
        path = root / season / f"{kind}_{region.scene}" / f"{season}_{kind}_{region.scene}_p{pid}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", count=data.shape[0], dtype=data.dtype, **profile, **extra) as dst:
            dst.write(data)
            dst.descriptions = tuple(names)
        paths.append(path)
    return paths
