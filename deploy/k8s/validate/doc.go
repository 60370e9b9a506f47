// Package validate checks troupe's Kubernetes manifests (deploy/k8s) against
// the upstream API types: every document decodes strictly (an unknown or
// misspelt field is an error) into its k8s.io/api type, the kustomizations
// name files that exist and patch objects that exist, and the objects agree
// with one another (selectors, named ports, ConfigMaps). It is a module of
// its own so that k8s.io/api stays out of troupe's go.mod; `make unit` runs
// its tests. troupe's own commands and flags in the manifests are checked
// against the binary by cmd/troupe's TestKubernetes.
package validate
