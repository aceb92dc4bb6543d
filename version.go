package connectrelay

// Version is this release of connectrelay, as CHANGELOG.md lists it. The worker
// sends it in the User-Agent of its calls to the product.
const Version = "0.2.0"
