/// The release, as `sinkhole --version` prints it and the start-up line and `/metrics` carry it.
public enum SinkholeVersion {
    public static let string = "0.1.0"
}
