variable "name" {
  description = "Prefix of every resource name; the key admits log groups named /<name>/..."
  type        = string
}
