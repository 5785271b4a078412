#!/bin/bash
# Regenerates the forgery fixtures for ekcert tests (openssl 3). Run from this directory.
# The EK key is the RSA test key of makecred/testdata (so tests can build its TPMT_PUBLIC).
set -eu
umask 077
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
openssl pkey -inform DER -in ../../makecred/testdata/rsa2048-test-ek.pk8 -pubout -out "$T/ek.pub"
cat > "$T/ext.cnf" <<'X'
[root]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[root_pathlen0]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
[inter]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign
[notca]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyCertSign
[nocertsign]
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature
[ek]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyEncipherment
extendedKeyUsage = 2.23.133.8.1
subjectAltName = critical, dirName:tpm_dn
certificatePolicies = 1.2.3.4.5
[ek_unknown_critical]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyEncipherment
subjectAltName = critical, dirName:tpm_dn
1.3.6.1.4.1.99999.1 = critical, DER:05:00
[tpm_dn]
1.2.23.133.2.1 = id:54455354
1.2.23.133.2.2 = TESTTPM
1.2.23.133.2.3 = id:00010002
X
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:"$1" -out "$2"; }
ec P-384 "$T/root.key"; ec P-384 "$T/evil.key"; ec P-256 "$T/inter.key"; ec P-256 "$T/other.key"
openssl req -new -x509 -key "$T/root.key" -subj "/O=Test TPM Vendor/CN=Test EK Root" -sha384 \
  -not_before 20240101000000Z -not_after 20440101000000Z -set_serial 1 \
  -config "$T/ext.cnf" -extensions root -out root.pem 2>/dev/null </dev/null || true
# openssl req -x509 has no -not_before on older versions; fall back to x509 -signkey.
if [ ! -s root.pem ]; then
  openssl req -new -key "$T/root.key" -subj "/O=Test TPM Vendor/CN=Test EK Root" -out "$T/root.csr" -config /dev/null 2>/dev/null || \
  openssl req -new -key "$T/root.key" -subj "/O=Test TPM Vendor/CN=Test EK Root" -out "$T/root.csr"
  openssl x509 -req -in "$T/root.csr" -signkey "$T/root.key" -sha384 -days 7300 -set_serial 1 \
    -extfile "$T/ext.cnf" -extensions root -out root.pem
fi
csr() { openssl req -new -key "$1" -subj "$2" -out "$3" 2>/dev/null; }
csr "$T/inter.key" "/O=Test TPM Vendor/CN=Test EK Intermediate" "$T/inter.csr"
openssl x509 -req -in "$T/inter.csr" -CA root.pem -CAkey "$T/root.key" -sha384 -days 3650 -set_serial 2 \
  -extfile "$T/ext.cnf" -extensions inter -out inter.pem
# The EK certificate: empty subject, TCG SAN; openssl needs a CSR, so sign a CSR of a throwaway
# key and force the EK public key in.
csr "$T/other.key" "/CN=x" "$T/dummy.csr"
ek_cert() { # issuer-cert issuer-key ext out [subject]
  openssl x509 -req -in "$T/dummy.csr" -CA "$1" -CAkey "$2" -sha256 -days 3650 -set_serial "$RANDOM" \
    -extfile "$T/ext.cnf" -extensions "$3" -force_pubkey "$T/ek.pub" -subj "${5:-/}" -out "$4"
}
ek_cert inter.pem "$T/inter.key" ek ek.pem
ek_cert inter.pem "$T/inter.key" ek_unknown_critical ek-unknown-critical.pem
# An impostor CA with the intermediate's name but another key.
csr "$T/evil.key" "/O=Test TPM Vendor/CN=Test EK Intermediate" "$T/evil.csr"
openssl x509 -req -in "$T/evil.csr" -signkey "$T/evil.key" -sha384 -days 3650 -set_serial 3 \
  -extfile "$T/ext.cnf" -extensions root -out evil-ca.pem
ek_cert evil-ca.pem "$T/evil.key" ek ek-by-evil.pem
# Issuer that is not a CA, and one without keyCertSign, both chained to the root.
csr "$T/other.key" "/O=Test TPM Vendor/CN=Not A CA" "$T/notca.csr"
openssl x509 -req -in "$T/notca.csr" -CA root.pem -CAkey "$T/root.key" -sha384 -days 3650 -set_serial 4 \
  -extfile "$T/ext.cnf" -extensions notca -out notca.pem
ek_cert notca.pem "$T/other.key" ek ek-by-notca.pem
csr "$T/other.key" "/O=Test TPM Vendor/CN=No CertSign" "$T/nocs.csr"
openssl x509 -req -in "$T/nocs.csr" -CA root.pem -CAkey "$T/root.key" -sha384 -days 3650 -set_serial 5 \
  -extfile "$T/ext.cnf" -extensions nocertsign -out nocertsign.pem
ek_cert nocertsign.pem "$T/other.key" ek ek-by-nocertsign.pem
# pathlen: root0 (pathlen 0) -> inter0 -> EK must fail.
ec P-256 "$T/root0.key"
csr "$T/root0.key" "/O=Test TPM Vendor/CN=Pathlen0 Root" "$T/root0.csr"
openssl x509 -req -in "$T/root0.csr" -signkey "$T/root0.key" -sha256 -days 7300 -set_serial 6 \
  -extfile "$T/ext.cnf" -extensions root_pathlen0 -out root-pathlen0.pem
csr "$T/inter.key" "/O=Test TPM Vendor/CN=Pathlen0 Intermediate" "$T/inter0.csr"
openssl x509 -req -in "$T/inter0.csr" -CA root-pathlen0.pem -CAkey "$T/root0.key" -sha256 -days 3650 -set_serial 7 \
  -extfile "$T/ext.cnf" -extensions inter -out inter-pathlen0.pem
csr "$T/other.key" "/O=Test TPM Vendor/CN=Pathlen0 Sub" "$T/sub0.csr"
openssl x509 -req -in "$T/sub0.csr" -CA inter-pathlen0.pem -CAkey "$T/inter.key" -sha256 -days 3650 -set_serial 8 \
  -extfile "$T/ext.cnf" -extensions inter -out sub-pathlen0.pem
ek_cert sub-pathlen0.pem "$T/other.key" ek ek-pathlen.pem
# SHA-1 signed EK certificate (refused by policy).
openssl x509 -req -in "$T/dummy.csr" -CA inter.pem -CAkey "$T/inter.key" -sha1 -days 3650 -set_serial 9 \
  -extfile "$T/ext.cnf" -extensions ek -force_pubkey "$T/ek.pub" -subj "/" -out ek-sha1.pem
