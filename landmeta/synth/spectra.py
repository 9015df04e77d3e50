"""Approximate optical and radar signatures: Sentinel-2 endmembers, class mixtures, SAR levels.

Surface reflectance is a linear mixture of a few endmembers (green vegetation, dry vegetation,
soil, water, built surfaces, snow); each of the 10 simplified classes is a distribution over those
fractions. Values are rounded textbook figures for each Sentinel-2 band, not measurements.
"""

from __future__ import annotations

import numpy as np

S2_RESOLUTION_M = np.array([60, 10, 10, 10, 20, 20, 20, 10, 20, 60, 60, 20, 20])
LC_BANDS: list[str] = ["IGBP", "LCCS_LC", "LCCS_LU", "LCCS_SH"]

# Endmember reflectance spectra (rows) over the 13 bands.
ENDMEMBERS: list[str] = ["green", "dry", "soil", "water", "built", "snow"]
ENDMEMBER_SPECTRA = np.array([
    # B1    B2    B3    B4    B5    B6    B7    B8    B8A   B9    B10    B11   B12
    [0.030, 0.035, 0.080, 0.040, 0.120, 0.300, 0.380, 0.420, 0.430, 0.340, 0.004, 0.220, 0.100],  # green
    [0.060, 0.075, 0.110, 0.150, 0.180, 0.210, 0.230, 0.250, 0.260, 0.200, 0.004, 0.350, 0.250],  # dry
    [0.070, 0.090, 0.130, 0.190, 0.220, 0.240, 0.260, 0.275, 0.285, 0.230, 0.004, 0.360, 0.300],  # soil
    [0.060, 0.050, 0.045, 0.025, 0.018, 0.012, 0.010, 0.008, 0.007, 0.004, 0.001, 0.003, 0.002],  # water
    [0.100, 0.110, 0.125, 0.145, 0.155, 0.165, 0.175, 0.185, 0.190, 0.160, 0.003, 0.230, 0.210],  # built
    [0.900, 0.900, 0.880, 0.850, 0.820, 0.800, 0.780, 0.750, 0.730, 0.550, 0.020, 0.100, 0.080],  # snow
])
# Soil colour: darker/brighter and redder/greyer soils tilt the visible part of the spectrum.
SOIL_REDNESS_TILT = np.array([-0.5, -0.4, -0.2, 0.15, 0.15, 0.1, 0.05, 0.05, 0.05, 0.0, 0.0, 0.0, 0.0])
# Additive path radiance of haze, strongest at short wavelengths.
HAZE_SPECTRUM = np.array([0.10, 0.085, 0.060, 0.040, 0.034, 0.030, 0.026, 0.022, 0.021, 0.016, 0.0, 0.006, 0.003])
# Rayleigh path radiance of a clear Level-1C scene (molecular scattering, ~wavelength^-4): the
# blue cast of real top-of-atmosphere imagery, in which land is bluer than it is green or red.
RAYLEIGH_SPECTRUM = np.array([0.110, 0.075, 0.044, 0.022, 0.018, 0.014, 0.011, 0.008, 0.008, 0.005, 0.0, 0.0006, 0.0002])
CLOUD_SPECTRUM = np.array([0.55, 0.55, 0.54, 0.54, 0.55, 0.55, 0.55, 0.55, 0.55, 0.45, 0.12, 0.40, 0.28])

# Mean endmember fractions per simplified class at full greenness (green, dry, soil, water,
# built, snow), with a Dirichlet concentration: lower = more variable from parcel to parcel.
CLASS_FRACTIONS = np.array([
    [0.78, 0.10, 0.06, 0.04, 0.00, 0.02],  # Forest
    [0.32, 0.28, 0.38, 0.00, 0.00, 0.02],  # Shrubland
    [0.42, 0.30, 0.26, 0.00, 0.00, 0.02],  # Savanna
    [0.55, 0.25, 0.18, 0.00, 0.00, 0.02],  # Grassland
    [0.45, 0.15, 0.08, 0.30, 0.00, 0.02],  # Wetlands
    [0.40, 0.20, 0.38, 0.00, 0.00, 0.02],  # Cropland (mean over crop stages; parcels vary)
    [0.15, 0.04, 0.12, 0.00, 0.67, 0.02],  # Urban/Built-up
    [0.02, 0.02, 0.16, 0.00, 0.00, 0.80],  # Snow/Ice
    [0.04, 0.08, 0.86, 0.00, 0.00, 0.02],  # Barren
    [0.01, 0.00, 0.03, 0.94, 0.00, 0.02],  # Water
])
CLASS_CONCENTRATION = np.array([40.0, 15.0, 15.0, 15.0, 12.0, 6.0, 12.0, 20.0, 25.0, 60.0])
# Brightness factor for sub-pixel shadow (canopies, buildings).
CLASS_SHADE = np.array([0.72, 0.92, 0.88, 0.97, 0.95, 0.95, 0.85, 1.0, 1.0, 1.0])
# Amplitude (log scale) of the 1-3 px grain within a parcel: crowns, shrubs, rows, tracks, relief.
CLASS_GRAIN = np.array([0.12, 0.15, 0.15, 0.10, 0.10, 0.08, 0.0, 0.05, 0.10, 0.0])
# Endmember fractions of crop stages: bare, emerging, green, ripe/harvested.
CROP_STAGES = np.array([
    [0.04, 0.08, 0.88, 0.0, 0.0, 0.0],
    [0.35, 0.10, 0.55, 0.0, 0.0, 0.0],
    [0.85, 0.07, 0.08, 0.0, 0.0, 0.0],
    [0.10, 0.60, 0.30, 0.0, 0.0, 0.0],
])

# Sentinel-1 sigma0 (dB) per class: VV mean, VH mean; parcel-to-parcel spread in dB.
S1_CLASS_DB = np.array([
    [-7.5, -13.0], [-10.0, -17.0], [-9.0, -15.5], [-11.0, -18.0], [-9.0, -16.0],
    [-10.5, -17.0], [-4.0, -11.0], [-13.0, -21.0], [-14.0, -22.5], [-20.0, -27.0],
])
S1_CLASS_SPREAD_DB = np.array([0.8, 1.2, 1.2, 1.2, 2.0, 2.0, 2.5, 2.0, 2.0, 2.5])
S1_LOOKS = 4.4  # equivalent number of looks of an IW GRD product

# IGBP subtypes per simplified class (used for band 1 of the LC files).
IGBP_OF_CLASS: dict[int, list[int]] = {
    0: [1, 2, 3, 4, 5], 1: [6, 7], 2: [8, 9], 3: [10], 4: [11], 5: [12, 14], 6: [13], 7: [15], 8: [16], 9: [17],
}
# Forest subtypes that lose their leaves in winter.
DECIDUOUS_IGBP = {3, 4}
# IGBP -> (LCCS land cover, LCCS land use, LCCS surface hydrology): MODIS MCD12Q1 codes derived
# deterministically from IGBP; they carry no information beyond band 1.
LCCS_OF_IGBP: dict[int, tuple[int, int, int]] = {
    1: (11, 10, 10), 2: (12, 10, 10), 3: (13, 10, 10), 4: (14, 10, 10), 5: (15, 10, 10),
    6: (41, 40, 40), 7: (43, 40, 40), 8: (21, 20, 20), 9: (22, 20, 20), 10: (31, 30, 30),
    11: (31, 30, 50), 12: (31, 36, 30), 13: (255, 9, 255), 14: (31, 35, 30), 15: (2, 2, 2),
    16: (1, 1, 1), 17: (3, 3, 3),
}


def soil_spectrum(brightness: float, redness: float) -> np.ndarray:
    """A regional soil: the reference soil scaled in brightness and tilted in colour."""
    return np.clip(ENDMEMBER_SPECTRA[2] * brightness * (1.0 + redness * SOIL_REDNESS_TILT), 0.005, 0.8)


def greenness(season: int, lat: float, rng: np.random.Generator) -> float:
    """Phenology: fraction of green vegetation kept, from the calendar season (0 = Mar-May) and latitude."""
    local = (season + 2) % 4 if lat < 0 else season  # southern hemisphere: seasons flipped
    temperate = float(np.clip((abs(lat) - 15.0) / 30.0, 0.0, 1.0))
    seasonal = [0.7, 1.0, 0.55, 0.2][local]
    tropical = rng.uniform(0.45, 1.0)  # wet or dry season
    return float(np.clip(temperate * seasonal + (1 - temperate) * tropical + rng.normal(0, 0.07), 0.1, 1.0))
