"""Test.py for the MII-pretrained checkpoints: the best pretrain epoch by Prevalid.py on the test rows."""
import Test

if __name__ == "__main__":
    Test.main(stage="pretrain")
