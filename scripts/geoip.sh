#!/usr/bin/env bash
# Installs a free GeoIP country database from the npm registry into data/geoip/ (or the folder given), for
# COLLECTOR_GEOIP_CITY_DB: ip-location-db's "geo-whois-asn-country" (IPv4 and IPv6 in one file), built from the
# five RIRs' WHOIS and IP-to-ASN data and published under CC BY 4.0 by the NRO (attribution: nro.net; the
# licence is copied beside the file). Run it again to update; a running collector reloads the file by itself.
# City names and AS numbers/organisations need another MMDB file (README, "Enrichment").
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-data/geoip}"
pkg="@ip-location-db/geo-whois-asn-country-mmdb"
command -v curl >/dev/null 2>&1 || { echo "geoip.sh needs curl" >&2; exit 1; }
meta=$(curl -fsSL "https://registry.npmjs.org/${pkg/\//%2F}/latest")
tarball=$(printf '%s' "$meta" | grep -o '"tarball": *"[^"]*"' | head -1 | sed 's/.*"\(http[^"]*\)"/\1/')
[ -n "$tarball" ] || { echo "geoip.sh: no tarball for $pkg in the npm registry" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL "$tarball" | tar xz -C "$tmp"
mkdir -p "$dest"
# Renamed into place, so that a collector watching the file never reads half of it.
cp "$tmp/package/geo-whois-asn-country.mmdb" "$dest/.country.mmdb.new"
mv "$dest/.country.mmdb.new" "$dest/country.mmdb"
cp "$tmp/package/NRO_LICENSE" "$dest/NRO_LICENSE"
echo "Installed $dest/country.mmdb ($pkg, CC BY 4.0 by the NRO)."
echo "Use it with: COLLECTOR_GEOIP_CITY_DB=$dest/country.mmdb scripts/run.sh"
