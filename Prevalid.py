"""Valid.py for the MII-pretrained checkpoints (pretrain-<epoch>.pth): writes pretrain-valid.json."""
import Valid

if __name__ == "__main__":
    Valid.main(stage="pretrain")
