//! Geo and ASN facts from local MaxMind-format database files (GeoLite2/GeoIP2 City and ASN,
//! or any file in that format), only when the operator configures them
//! (`monitor.geoip_city_file`, `monitor.geoip_asn_file`). Nothing is downloaded, ever.
//!
//! The files are memory-mapped, not read into the heap: a City database is ~70 MB and a Pi has
//! little RAM; the kernel pages in what lookups touch. Replace a file atomically (write a new
//! file, rename it over the old one, as `geoipupdate` does) and restart; truncating it in place
//! while the node runs is not supported.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

type Reader = maxminddb::Reader<maxminddb::Mmap>;

/// What the databases say about one address.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Geo {
    pub address: String,
    pub country: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// NIP-52 geohash of the location, 6 characters (about 1 km; IP geolocation is no finer).
    pub geohash: Option<String>,
    pub asn: Option<u32>,
    pub as_org: Option<String>,
}

#[derive(Default)]
pub struct GeoDb {
    city: Option<Reader>,
    asn: Option<Reader>,
}

#[derive(Deserialize, Default)]
struct CityRecord {
    #[serde(default)]
    country: Option<IsoRecord>,
    #[serde(default)]
    city: Option<NamesRecord>,
    #[serde(default)]
    location: Option<LocationRecord>,
}

#[derive(Deserialize, Default)]
struct IsoRecord {
    #[serde(default)]
    iso_code: Option<String>,
}

#[derive(Deserialize, Default)]
struct NamesRecord {
    #[serde(default)]
    names: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
struct LocationRecord {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

#[derive(Deserialize, Default)]
struct AsnRecord {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(default)]
    autonomous_system_organization: Option<String>,
}

fn open(key: &str, path: &Path) -> Result<Reader, String> {
    // SAFETY: the file is mapped read-only; the module docs require it be replaced atomically
    // (rename), never modified in place, while the node runs.
    unsafe { maxminddb::Reader::open_mmap(path) }.map_err(|e| {
        format!(
            "{key} {}: not a readable MaxMind-format database ({e}); fix the path or remove the setting",
            path.display()
        )
    })
}

impl GeoDb {
    /// Open the configured databases; an unreadable file is an error naming the setting.
    pub fn open(city: Option<&Path>, asn: Option<&Path>) -> Result<GeoDb, String> {
        Ok(GeoDb {
            city: city
                .map(|p| open("monitor.geoip_city_file", p))
                .transpose()?,
            asn: asn.map(|p| open("monitor.geoip_asn_file", p)).transpose()?,
        })
    }

    pub fn is_configured(&self) -> bool {
        self.city.is_some() || self.asn.is_some()
    }

    /// Facts for the first of `addresses` either database knows.
    pub fn lookup(&self, addresses: &[IpAddr]) -> Option<Geo> {
        if !self.is_configured() {
            return None;
        }
        addresses.iter().find_map(|ip| self.lookup_one(*ip))
    }

    fn lookup_one(&self, ip: IpAddr) -> Option<Geo> {
        let mut g = Geo {
            address: ip.to_string(),
            ..Default::default()
        };
        let mut found = false;
        if let Some(r) = &self.city {
            if let Ok(Some(c)) = r.lookup(ip).and_then(|l| l.decode::<CityRecord>()) {
                found = true;
                g.country = c.country.and_then(|c| c.iso_code).map(|s| cap(&s));
                g.city = c
                    .city
                    .and_then(|c| c.names)
                    .and_then(|n| n.get("en").cloned())
                    .map(|s| cap(&s));
                if let Some(l) = c.location {
                    let valid =
                        |v: Option<f64>, max: f64| v.filter(|x| x.is_finite() && x.abs() <= max);
                    g.latitude = valid(l.latitude, 90.0);
                    g.longitude = valid(l.longitude, 180.0);
                    if let (Some(lat), Some(lon)) = (g.latitude, g.longitude) {
                        g.geohash = Some(geohash(lat, lon, 6));
                    }
                }
            }
        }
        if let Some(r) = &self.asn {
            if let Ok(Some(a)) = r.lookup(ip).and_then(|l| l.decode::<AsnRecord>()) {
                found = true;
                g.asn = a.autonomous_system_number;
                g.as_org = a.autonomous_system_organization.map(|s| cap(&s));
            }
        }
        found.then_some(g)
    }
}

/// Strings from a database file are capped like anything else read from outside.
fn cap(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Geohash (base32 "0123456789bcdefghjkmnpqrstuvwxyz", longitude bit first) of `precision`
/// characters.
pub fn geohash(lat: f64, lon: f64, precision: usize) -> String {
    const BASE32: &[u8] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    let (mut lat_r, mut lon_r) = ((-90.0f64, 90.0f64), (-180.0f64, 180.0f64));
    let mut out = String::with_capacity(precision);
    let (mut bit, mut ch, mut even) = (0, 0usize, true);
    while out.len() < precision {
        let (range, v) = if even {
            (&mut lon_r, lon)
        } else {
            (&mut lat_r, lat)
        };
        let mid = (range.0 + range.1) / 2.0;
        if v >= mid {
            ch = (ch << 1) | 1;
            range.0 = mid;
        } else {
            ch <<= 1;
            range.1 = mid;
        }
        even = !even;
        bit += 1;
        if bit == 5 {
            out.push(BASE32[ch] as char);
            bit = 0;
            ch = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn geohash_matches_known_values() {
        // Reference values from the geohash definition (Wikipedia's example and others).
        assert_eq!(super::geohash(42.6, -5.6, 5), "ezs42");
        assert_eq!(super::geohash(57.64911, 10.40744, 11), "u4pruydqqvj");
        assert_eq!(super::geohash(-25.382708, -49.265506, 9), "6gkzwgjzn");
    }
}
