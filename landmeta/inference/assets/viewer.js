"use strict";
(function () {
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const body = document.body;
  // CRS.Simple: lng = column, lat = -row (north up), one unit per scene pixel
  const bounds = L.latLngBounds([-data.image_rows, 0], [0, data.image_cols]);
  const map = L.map("map", {crs: L.CRS.Simple, minZoom: -12, maxZoom: 8, zoomSnap: 0.25, zoomDelta: 0.5});
  map.fitBounds(bounds);
  const slider = document.getElementById("opacity");
  const quicklook = L.imageOverlay(data.quicklook, bounds, {className: "viewer-image"});
  const classes = L.imageOverlay(data.classes, bounds, {className: "viewer-image", opacity: slider.value / 100});
  let loaded = 0;
  let pixels = null;  // RGBA of the class image, read back to name the class under the pointer
  const centre = L.latLng(-data.rows / 2, data.cols / 2);

  function layerLoaded() {
    loaded += 1;
    body.dataset.layersLoaded = String(loaded);
    if (loaded === 2 && body.dataset.status !== "error") {
      show(centre, "centre of the scene");
      body.dataset.status = "ready";
    }
  }
  function layerFailed() { body.dataset.status = "error"; }
  function readClasses(image) {
    try {
      const canvas = document.createElement("canvas");
      canvas.width = image.naturalWidth;
      canvas.height = image.naturalHeight;
      const context = canvas.getContext("2d");
      context.drawImage(image, 0, 0);
      pixels = {width: canvas.width, height: canvas.height,
                rgba: context.getImageData(0, 0, canvas.width, canvas.height).data};
    } catch (err) {
      pixels = null;  // the class under the pointer is then not shown
    }
  }
  quicklook.on("load", layerLoaded).on("error", layerFailed).addTo(map);
  classes.on("load", function (e) { readClasses(e.target.getElement()); layerLoaded(); })
    .on("error", layerFailed).addTo(map);
  L.control.layers(null, {"true colour": quicklook, "class map": classes}, {collapsed: false}).addTo(map);

  slider.addEventListener("input", function () {
    classes.setOpacity(slider.value / 100);
    document.getElementById("opacity-value").textContent = slider.value + " %";
  });

  function classAt(row, col) {
    if (!pixels || row >= data.image_rows || col >= data.image_cols) return null;
    const r = Math.floor(row / data.image_rows * pixels.height);
    const c = Math.floor(col / data.image_cols * pixels.width);
    const k = 4 * (r * pixels.width + c);
    if (pixels.rgba[k + 3] === 0) return -1;
    let best = -1, distance = Infinity;
    data.colors.forEach(function (rgb, i) {
      const d = (rgb[0] - pixels.rgba[k]) ** 2 + (rgb[1] - pixels.rgba[k + 1]) ** 2
        + (rgb[2] - pixels.rgba[k + 2]) ** 2;
      if (d < distance) { best = i; distance = d; }
    });
    return best;
  }
  function lonLat(row, col) {
    const grid = data.lonlat, n = grid.nodes;
    const u = Math.min(Math.max(col / data.cols, 0), 1) * (n - 1);
    const v = Math.min(Math.max(row / data.rows, 0), 1) * (n - 1);
    const j = Math.min(Math.floor(u), n - 2), i = Math.min(Math.floor(v), n - 2);
    const fu = u - j, fv = v - i, k = i * n + j;
    function at(a) {
      return (1 - fv) * ((1 - fu) * a[k] + fu * a[k + 1]) + fv * ((1 - fu) * a[k + n] + fu * a[k + n + 1]);
    }
    return [((at(grid.lon) + 180) % 360 + 360) % 360 - 180, at(grid.lat)];
  }
  function put(id, text, values) {
    const element = document.getElementById(id);
    element.textContent = text;
    for (const key of Object.keys(element.dataset)) delete element.dataset[key];
    Object.assign(element.dataset, values || {});
  }
  function show(latlng, where) {
    const col = latlng.lng, row = -latlng.lat;
    put("pointer-where", where);
    if (!(row >= 0 && col >= 0 && row < data.rows && col < data.cols)) {
      put("pointer-pixel", "outside the scene");
      ["pointer-class", "pointer-xy", "pointer-lonlat"].forEach(function (id) { put(id, ""); });
      return;
    }
    const r = Math.floor(row), c = Math.floor(col);
    put("pointer-pixel", "pixel row " + r + ", column " + c, {row: r, col: c});
    const id = classAt(row, col);
    put("pointer-class", id === null ? "" : "class: " + (id < 0 ? "nodata" : data.names[id]),
        id === null ? {} : {classId: id});
    if (data.transform) {
      const t = data.transform;
      const x = t[0] * col + t[1] * row + t[2], y = t[3] * col + t[4] * row + t[5];
      const digits = data.projected ? 1 : 6;
      put("pointer-xy", "x " + x.toFixed(digits) + ", y " + y.toFixed(digits) + " (" + data.units + ")",
          {x: x.toFixed(6), y: y.toFixed(6)});
    } else {
      put("pointer-xy", "");
    }
    if (data.lonlat) {
      const ll = lonLat(row, col);
      put("pointer-lonlat", "lon " + ll[0].toFixed(5) + "°, lat " + ll[1].toFixed(5) + "°",
          {lon: ll[0].toFixed(8), lat: ll[1].toFixed(8)});
    } else {
      put("pointer-lonlat", "");
    }
  }
  map.on("mousemove", function (e) { show(e.latlng, "pointer"); });
  map.on("mouseout", function () { show(centre, "centre of the scene"); });
})();