"""Mapping a new region: adapt a checkpoint to a user's labelled tiles, then predict whole scenes.

`support` reads the labelled tiles, `adaptation` turns a checkpoint into an adapted one, `scene`
opens input rasters window by window, `predict` runs the sliding window, `maps` writes the outputs,
`viewer` the HTML map page.
"""
