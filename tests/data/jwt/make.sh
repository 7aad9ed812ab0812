#!/usr/bin/env bash
# Regenerates the JWT test keys and the JWKS that publishes their public halves (tests/jwt.rs,
# fuzz/fuzz_targets/jwt.rs). Test-only keys: never use them for anything else. Needs openssl.
# After regenerating, also regenerate the fuzz seeds: `cargo test --release --test jwt --
# --ignored write_fuzz_seeds`.
set -euo pipefail
cd "$(dirname "$0")"

openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem
# The RSA public key as a PEM: what an HMAC key-confusion attacker would use as the secret.
openssl pkey -in rsa.pem -pubout -out rsa.pub.pem
openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out p256.pem
openssl genpkey -quiet -algorithm ED25519 -out ed25519.pem
openssl genpkey -quiet -algorithm ED25519 -out ed25519-other.pem

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
hex2b64url() { xxd -r -p | b64url; }

rsa_n=$(openssl pkey -in rsa.pem -noout -text | awk '/^modulus:/{f=1;next} /^publicExponent/{f=0} f' \
  | tr -d ' :\n' | sed 's/^00//' | hex2b64url)
rsa_e=$(printf '%06x' "$(openssl pkey -in rsa.pem -noout -text | awk '/^publicExponent/{print $2}')" | hex2b64url)
# The uncompressed P-256 point is 04 || x || y, 32 bytes each.
p256_pub=$(openssl pkey -in p256.pem -pubout -outform DER | tail -c 65 | xxd -p | tr -d '\n')
p256_x=$(echo "${p256_pub:2:64}" | hex2b64url)
p256_y=$(echo "${p256_pub:66:64}" | hex2b64url)
ed_x=$(openssl pkey -in ed25519.pem -pubout -outform DER | tail -c 32 | b64url)
ed_other_x=$(openssl pkey -in ed25519-other.pem -pubout -outform DER | tail -c 32 | b64url)

cat > jwks.json <<JSON
{
  "keys": [
    {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": "$rsa_n", "e": "$rsa_e"},
    {"kty": "EC", "kid": "p256-1", "use": "sig", "crv": "P-256", "x": "$p256_x", "y": "$p256_y"},
    {"kty": "OKP", "kid": "ed-1", "use": "sig", "crv": "Ed25519", "x": "$ed_x"},
    {"kty": "OKP", "kid": "ed-2", "crv": "Ed25519", "x": "$ed_other_x"}
  ]
}
JSON
echo "wrote rsa.pem rsa.pub.pem p256.pem ed25519.pem ed25519-other.pem jwks.json"
