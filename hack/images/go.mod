// Tiny programs baked into the real node's images (hack/build-images.sh): the pod sandbox's
// pause process and a test HTTP app for dynamic versions.  Standard library only.
module miosa.local/images

go 1.22
