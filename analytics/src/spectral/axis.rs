//! The wavelength axis: validated once per batch, then used to map pixels to nm and eV.
//!
//! Every feature is computed in pixel space (exactly like scipy) and only then mapped through
//! the axis, so a descending or non-uniform axis needs no resampling. Validation lives here so
//! the per-spectrum loops can trust the axis (finite, positive, strictly monotonic).

use std::ops::Range;

use super::SpectralError;

/// `h c` in eV nm (CODATA 2018: 1239.841984... eV nm): `E[eV] = HC_EV_NM / lambda[nm]`.
pub const HC_EV_NM: f64 = 1239.84198;

/// Photon energy in eV of a wavelength in nm (`1239.84198 / nm`).
#[inline]
pub fn nm_to_ev(nm: f64) -> f64 {
    HC_EV_NM / nm
}

/// Wavelength in nm of a photon energy in eV (`1239.84198 / ev`).
#[inline]
pub fn ev_to_nm(ev: f64) -> f64 {
    HC_EV_NM / ev
}

/// A validated wavelength axis: finite, positive, strictly increasing or strictly decreasing.
///
/// Borrowed, because the axis belongs to the calibration shared by a whole batch.
#[derive(Debug, Clone, Copy)]
pub struct WavelengthAxis<'a> {
    nm: &'a [f64],
    descending: bool,
}

impl<'a> WavelengthAxis<'a> {
    /// Validates `nm` (one wavelength per pixel, in nm).
    ///
    /// # Errors
    /// [`SpectralError::EmptyAxis`] for an empty slice, [`SpectralError::InvalidAxisValue`] for a
    /// NaN, infinite, zero or negative wavelength, [`SpectralError::AxisNotMonotonic`] when the
    /// axis is not strictly increasing or strictly decreasing (repeated values included).
    ///
    /// ```
    /// use flowdaq_analytics::spectral::WavelengthAxis;
    /// let axis = WavelengthAxis::new(&[700.0, 600.0, 500.0]).unwrap();
    /// assert!(axis.is_descending());
    /// assert_eq!(axis.nm_at(0.5), 650.0);
    /// assert!(WavelengthAxis::new(&[500.0, 600.0, 550.0]).is_err());
    /// ```
    pub fn new(nm: &'a [f64]) -> Result<Self, SpectralError> {
        if nm.is_empty() {
            return Err(SpectralError::EmptyAxis);
        }
        for (index, &value) in nm.iter().enumerate() {
            if !(value.is_finite() && value > 0.0) {
                return Err(SpectralError::InvalidAxisValue { index, value });
            }
        }
        let descending = nm.len() > 1 && nm[1] < nm[0];
        for (i, w) in nm.windows(2).enumerate() {
            let ok = if descending { w[1] < w[0] } else { w[1] > w[0] };
            if !ok {
                return Err(SpectralError::AxisNotMonotonic { index: i + 1 });
            }
        }
        Ok(Self { nm, descending })
    }

    /// Number of pixels.
    #[inline]
    pub fn len(&self) -> usize {
        self.nm.len()
    }

    /// Always false: an axis has at least one pixel.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.nm.is_empty()
    }

    /// The wavelengths (nm), in pixel order.
    #[inline]
    pub fn as_slice(&self) -> &'a [f64] {
        self.nm
    }

    /// True if wavelength decreases with pixel index.
    #[inline]
    pub fn is_descending(&self) -> bool {
        self.descending
    }

    /// Shortest wavelength (nm).
    pub fn min_nm(&self) -> f64 {
        if self.descending {
            self.nm[self.nm.len() - 1]
        } else {
            self.nm[0]
        }
    }

    /// Longest wavelength (nm).
    pub fn max_nm(&self) -> f64 {
        if self.descending {
            self.nm[0]
        } else {
            self.nm[self.nm.len() - 1]
        }
    }

    /// Wavelength (nm) at a fractional pixel index, by linear interpolation between pixels.
    ///
    /// Indices outside `[0, len - 1]` (or NaN) are clamped to the nearest end.
    #[inline]
    pub fn nm_at(&self, pixel: f64) -> f64 {
        let last = self.nm.len() - 1;
        if !(pixel > 0.0) {
            return self.nm[0];
        }
        if pixel >= last as f64 {
            return self.nm[last];
        }
        let i = pixel as usize; // floor, pixel in (0, last)
        let t = pixel - i as f64;
        self.nm[i] + (self.nm[i + 1] - self.nm[i]) * t
    }

    /// Fractional pixel index of a wavelength (inverse of [`Self::nm_at`]); `None` outside the
    /// axis range or for a non-finite wavelength.
    pub fn pixel_of(&self, nm: f64) -> Option<f64> {
        let a = self.nm;
        if !nm.is_finite() || nm < self.min_nm() || nm > self.max_nm() {
            return None;
        }
        if a.len() == 1 {
            return Some(0.0);
        }
        // k = first pixel at or beyond `nm` in pixel order.
        let k = if self.descending {
            a.partition_point(|&x| x > nm)
        } else {
            a.partition_point(|&x| x < nm)
        };
        if k == 0 {
            return Some(0.0);
        }
        let k = k.min(a.len() - 1);
        let (x0, x1) = (a[k - 1], a[k]);
        Some((k - 1) as f64 + (nm - x0) / (x1 - x0))
    }

    /// Pixel range whose wavelengths lie in `[min(a, b), max(a, b)]` nm (all pixels for `None`).
    ///
    /// # Errors
    /// [`SpectralError::InvalidOption`] if a bound is not finite or the window holds no pixel.
    pub fn window(&self, window_nm: Option<(f64, f64)>) -> Result<Range<usize>, SpectralError> {
        let Some((a, b)) = window_nm else {
            return Ok(0..self.nm.len());
        };
        if !(a.is_finite() && b.is_finite()) {
            return Err(SpectralError::InvalidOption {
                name: "window_nm",
                reason: "bounds must be finite",
            });
        }
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let range = if self.descending {
            self.nm.partition_point(|&x| x > hi)..self.nm.partition_point(|&x| x >= lo)
        } else {
            self.nm.partition_point(|&x| x < lo)..self.nm.partition_point(|&x| x <= hi)
        };
        if range.is_empty() {
            return Err(SpectralError::InvalidOption {
                name: "window_nm",
                reason: "the window holds no pixel of the axis",
            });
        }
        Ok(range)
    }

    /// The sub-axis of a pixel range (which must be non-empty and within the axis).
    pub fn slice(&self, range: Range<usize>) -> WavelengthAxis<'a> {
        WavelengthAxis {
            nm: &self.nm[range],
            descending: self.descending,
        }
    }

    /// Fills `out` with the trapezoid half-steps `0.5 * |x[i+1] - x[i]|` (last entry 0), so that
    /// the integral of `y` is `sum(h[i] * (y[i] + y[i+1]))`.
    pub(crate) fn half_steps(&self, out: &mut Vec<f64>) {
        out.clear();
        out.extend(self.nm.windows(2).map(|w| 0.5 * (w[1] - w[0]).abs()));
        out.push(0.0);
    }
}

/// A validated axis kept by an analyzer for its calibration, with the window it analyses.
#[derive(Debug, Clone)]
pub(crate) struct PreparedAxis {
    nm: Vec<f64>,
    descending: bool,
    window: Range<usize>,
}

impl PreparedAxis {
    /// A copy of `full` with the pixels of `window_nm` ([`WavelengthAxis::window`]).
    pub(crate) fn new(
        full: WavelengthAxis<'_>,
        window_nm: Option<(f64, f64)>,
    ) -> Result<Self, SpectralError> {
        Ok(Self {
            window: full.window(window_nm)?,
            nm: full.as_slice().to_vec(),
            descending: full.is_descending(),
        })
    }

    /// The whole axis (nm per pixel).
    pub(crate) fn full_nm(&self) -> &[f64] {
        &self.nm
    }

    /// The analysed pixels.
    pub(crate) fn window(&self) -> Range<usize> {
        self.window.clone()
    }

    /// The analysed part of the axis.
    pub(crate) fn analysed(&self) -> WavelengthAxis<'_> {
        WavelengthAxis {
            nm: &self.nm[self.window.clone()],
            descending: self.descending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_table() {
        let cases: &[(&[f64], bool)] = &[
            (&[], false),
            (&[500.0], true),
            (&[400.0, 500.0, 510.0], true),
            (&[510.0, 500.0, 400.0], true),
            (&[400.0, 400.0, 500.0], false),
            (&[400.0, 500.0, 450.0], false),
            (&[400.0, f64::NAN, 500.0], false),
            (&[-1.0, 0.5, 1.0], false),
            (&[0.0, 1.0], false),
            (&[400.0, f64::INFINITY], false),
        ];
        for (axis, ok) in cases {
            assert_eq!(WavelengthAxis::new(axis).is_ok(), *ok, "{axis:?}");
        }
    }

    #[test]
    fn interpolation_both_directions() {
        let asc = [400.0, 410.0, 430.0, 460.0];
        let desc = [460.0, 430.0, 410.0, 400.0];
        let a = WavelengthAxis::new(&asc).unwrap();
        let d = WavelengthAxis::new(&desc).unwrap();
        assert_eq!(a.nm_at(1.5), 420.0);
        assert_eq!(d.nm_at(0.5), 445.0);
        assert_eq!(a.nm_at(-3.0), 400.0);
        assert_eq!(a.nm_at(9.0), 460.0);
        for nm in [400.0, 401.0, 425.0, 459.0, 460.0] {
            let pa = a.pixel_of(nm).unwrap();
            let pd = d.pixel_of(nm).unwrap();
            assert!((a.nm_at(pa) - nm).abs() < 1e-12, "{nm} {pa}");
            assert!((d.nm_at(pd) - nm).abs() < 1e-12, "{nm} {pd}");
        }
        assert!(a.pixel_of(399.0).is_none());
        assert!(d.pixel_of(461.0).is_none());
    }

    #[test]
    fn windows() {
        let asc = [400.0, 410.0, 420.0, 430.0];
        let desc = [430.0, 420.0, 410.0, 400.0];
        let a = WavelengthAxis::new(&asc).unwrap();
        let d = WavelengthAxis::new(&desc).unwrap();
        assert_eq!(a.window(Some((405.0, 420.0))).unwrap(), 1..3);
        assert_eq!(a.window(Some((420.0, 405.0))).unwrap(), 1..3);
        assert_eq!(d.window(Some((405.0, 420.0))).unwrap(), 1..3);
        assert_eq!(a.window(None).unwrap(), 0..4);
        assert!(a.window(Some((401.0, 402.0))).is_err());
        assert!(a.window(Some((f64::NAN, 402.0))).is_err());
    }

    #[test]
    fn energy() {
        assert!((nm_to_ev(500.0) - 2.479_683_96).abs() < 1e-8);
        assert!((ev_to_nm(nm_to_ev(517.3)) - 517.3).abs() < 1e-9);
    }
}
